"""The backtester on small synthetic files (exact) and on the shared real data (skipped when absent)."""

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from spot_optimizer.backtest.data import BacktestInputError
from spot_optimizer.backtest.run import BacktestRequest, backtest
from spot_optimizer.backtest.scenario import SimConfig

TYPES = ("m5.large", "m5a.large")


def write_inputs(tmp: Path, gz: bool = True) -> tuple[Path, Path, Path]:
    rows = ["timestamp,availability_zone,instance_type,product_description,spot_price"]
    for day in range(1, 4):
        for hour in range(0, 24, 6):
            # m5a in 1b gets cheap in the afternoons: room for a strategy to gain by moving.
            cheap = 0.02 if hour >= 12 else 0.045
            ts = f"2022-01-0{day}T{hour:02d}:00:00+00:00"
            rows += [f"{ts},eu-west-1a,m5.large,Linux/UNIX,0.040000",
                     f"{ts},eu-west-1b,m5a.large,Linux/UNIX,{cheap:.6f}",
                     f"{ts},eu-west-1a,m5a.large,Windows,0.500000"]
    text = "\n".join(rows) + "\n"
    prices = tmp / ("prices.csv.gz" if gz else "prices.csv")
    if gz:
        prices.write_bytes(gzip.compress(text.encode()))
    else:
        prices.write_text(text)
    ondemand = tmp / "od.csv"
    ondemand.write_text("region,instance_type,ondemand_usd_per_hour\neu-west-1,m5.large,0.107\n"
                        "eu-west-1,m5a.large,0.096\nus-east-1,m5.large,0.096\n")
    advisor = tmp / "advisor.json"
    advisor.write_text(json.dumps({"spot_advisor": {"eu-west-1": {"Linux": {
        "m5.large": {"s": 60, "r": 0}, "m5a.large": {"s": 60, "r": 1}}}}}))
    return prices, ondemand, advisor


def request(tmp: Path, **config: object) -> BacktestRequest:
    prices, ondemand, advisor = write_inputs(tmp)
    return BacktestRequest(prices=prices, ondemand=ondemand, advisor=advisor, region="eu-west-1", types=TYPES,
                           config=SimConfig(**config))  # type: ignore[arg-type]


def test_on_demand_is_the_reference_and_its_cost_is_exact(tmp_path: Path) -> None:
    summary, scenario, _ = backtest(request(tmp_path, instances=3))
    od = summary["strategies"]["on_demand"]
    assert od["savings_pct"] == 0.0 and od["interruptions"] == 0
    assert od["cost_usd"] == pytest.approx(3 * 0.096 * summary["hours"], rel=1e-9)
    assert set(summary) == {"strategies", "hours", "pools", "inputs"}
    assert summary["pools"] == 2  # the Windows record is not a Linux pool


def test_oracle_is_cheapest_without_interruptions(tmp_path: Path) -> None:
    summary, _, _ = backtest(request(tmp_path, instances=2, interruption_scale=0.0))
    rows = summary["strategies"]
    for name, row in rows.items():
        assert rows["oracle"]["cost_usd"] <= row["cost_usd"] + 1e-9, name
    assert rows["spot_optimizer"]["switches"] > 0  # it follows the cheap afternoons
    assert rows["spot_optimizer"]["cost_usd"] < rows["stay_put"]["cost_usd"]


def test_same_seed_same_result_other_seed_other_draws(tmp_path: Path) -> None:
    many = {"instances": 5, "interruption_scale": 200.0}
    first, _, _ = backtest(request(tmp_path, seed=7, **many))
    again, _, _ = backtest(request(tmp_path, seed=7, **many))
    other, _, _ = backtest(request(tmp_path, seed=8, **many))
    assert first == again
    assert first["strategies"] != other["strategies"]


def test_interruptions_hurt_baselines_more_than_the_engine(tmp_path: Path) -> None:
    summary, _, _ = backtest(request(tmp_path, instances=5, seed=1, interruption_scale=200.0,
                                     rebalance_share=1.0))
    rows = summary["strategies"]
    assert rows["stay_put"]["interruptions"] > 0
    assert rows["stay_put"]["downtime_s"] == rows["stay_put"]["interruptions"] * 180.0
    assert rows["spot_optimizer"]["downtime_s"] < rows["stay_put"]["downtime_s"]
    assert rows["oracle"]["interruptions"] == 0 and rows["oracle"]["downtime_s"] == 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"types": ("m5.large", "x9.huge")}, "x9.huge"),
        ({"region": "mars-1"}, "od.csv"),
        ({"prices": Path("/nonexistent/prices.csv")}, "/nonexistent/prices.csv"),
    ],
)
def test_clear_errors_for_bad_inputs(tmp_path: Path, change: dict[str, object], message: str) -> None:
    req = request(tmp_path)
    bad = BacktestRequest(**{**req.__dict__, **change})  # type: ignore[arg-type]
    with pytest.raises(BacktestInputError, match=message.replace(".", r"\.")):
        backtest(bad)


def test_garbled_file_and_empty_window(tmp_path: Path) -> None:
    req = request(tmp_path)
    garbled = tmp_path / "garbled.csv"
    garbled.write_text("not,a,price,file\n1,2,3,4\n")
    with pytest.raises(BacktestInputError, match="garbled.csv"):
        backtest(BacktestRequest(**{**req.__dict__, "prices": garbled}))
    from spot_optimizer.backtest.data import parse_time

    empty = BacktestRequest(**{**req.__dict__, "start": parse_time("2022-01-02T00:00:00"),
                               "end": parse_time("2022-01-02T00:01:00")})
    with pytest.raises(BacktestInputError, match="empty window"):
        backtest(empty)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "spot_optimizer.cli", "backtest", *args],
                          capture_output=True, text=True, timeout=120)


def test_cli_json_plot_and_exit_code(tmp_path: Path) -> None:
    prices, ondemand, advisor = write_inputs(tmp_path, gz=False)
    base = ["--prices", str(prices), "--ondemand", str(ondemand), "--advisor", str(advisor),
            "--region", "eu-west-1", "--types", ",".join(TYPES), "--instances", "2"]
    png = tmp_path / "cost.png"
    out = run_cli(*base, "--json", "--plot", str(png))
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert set(data["strategies"]) == {"on_demand", "stay_put", "greedy", "capacity_optimized",
                                       "spot_optimizer", "oracle"}
    assert set(data["strategies"]["oracle"]) == {"cost_usd", "savings_pct", "switches", "interruptions",
                                                 "downtime_s", "ondemand_hours"}
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = run_cli(*base)
    assert table.returncode == 0 and "spot_optimizer" in table.stdout
    bad = run_cli(*base[:-4], "--types", "nope.large")
    assert bad.returncode == 2 and "nope.large" in bad.stderr and str(prices) in bad.stderr


@pytest.mark.shared_data
def test_real_data_one_month(shared_data: Path) -> None:
    req = BacktestRequest(
        prices=shared_data / "spot-prices" / "eu-west-1_linux_2021-12-13_2022-06-07.csv.gz",
        ondemand=shared_data / "ondemand" / "ondemand_linux_32regions_2025-04.csv",
        advisor=shared_data / "spot-advisor" / "spot-advisor-data_2025-06-28.json",
        region="eu-west-1", types=("m5.large", "m5a.large", "m6i.large"),
        start=__import__("datetime").datetime.fromisoformat("2022-02-01T00:00:00+00:00"),
        end=__import__("datetime").datetime.fromisoformat("2022-03-01T00:00:00+00:00"),
        config=SimConfig(instances=3, seed=0),
    )
    summary, _, _ = backtest(req)
    rows = summary["strategies"]
    assert summary["hours"] == 28 * 24 and summary["pools"] == 9
    assert 0 < rows["oracle"]["cost_usd"] < rows["on_demand"]["cost_usd"]
    assert rows["spot_optimizer"]["savings_pct"] > 50  # spot in eu-west-1 was far below on-demand
    assert rows["oracle"]["cost_usd"] <= rows["spot_optimizer"]["cost_usd"]
