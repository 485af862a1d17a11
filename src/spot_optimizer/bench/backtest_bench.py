"""Backtest benchmark on the shared 6-month eu-west-1 data: how close the engine gets to the oracle."""

from __future__ import annotations

import time
from pathlib import Path

from spot_optimizer.backtest.run import BacktestRequest, backtest
from spot_optimizer.backtest.scenario import SimConfig

DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data"
PRICES = DATA / "spot-prices" / "eu-west-1_linux_2021-12-13_2022-06-07.csv.gz"
ONDEMAND = DATA / "ondemand" / "ondemand_linux_32regions_2025-04.csv"
ADVISOR = DATA / "spot-advisor" / "spot-advisor-data_2025-06-28.json"
REGION = "eu-west-1"
INSTANCES = 30  # enough workloads that interruptions (a few per 10 workloads per half-year) are compared
SEED = 0

TYPE_SETS: dict[str, tuple[str, ...]] = {
    "general-purpose .large": (
        "m5.large", "m5a.large", "m5d.large", "m5n.large", "m6i.large", "m6a.large", "m4.large", "t3.large",
    ),
    "mixed 20 types": (
        "m5.large", "m5a.large", "m6i.large", "c5.large", "c5a.large", "c6i.large", "r5.large", "r5a.large",
        "r6i.large", "t3.large", "m5.xlarge", "m5a.xlarge", "c5.xlarge", "r5.xlarge", "m5.2xlarge",
        "c5.2xlarge", "r5.2xlarge", "m5d.large", "c5d.large", "r5d.large",
    ),
}


def command(types: tuple[str, ...]) -> str:
    return (f"spot-optimizer backtest --prices {PRICES} --ondemand {ONDEMAND} --advisor {ADVISOR} "
            f"--region {REGION} --types {','.join(types)} --instances {INSTANCES} --seed {SEED} --json")


def _section(label: str, types: tuple[str, ...]) -> str:
    started = time.perf_counter()
    request = BacktestRequest(prices=PRICES, ondemand=ONDEMAND, advisor=ADVISOR, region=REGION, types=types,
                              config=SimConfig(instances=INSTANCES, seed=SEED))
    summary, _, _ = backtest(request)
    elapsed = time.perf_counter() - started
    rows = summary["strategies"]
    lines = [
        f"### {label}",
        "",
        f"{summary['hours']:.0f} h ({summary['inputs']['start']} .. {summary['inputs']['end']}), "
        f"{summary['pools']} spot pools, {INSTANCES} workloads, seed {SEED}, boot "
        f"{summary['inputs']['boot_time_s']:.0f} s; on-demand prices from `{ONDEMAND.name}`; "
        f"run time {elapsed:.0f} s.",
        "",
        "| strategy | cost USD | savings % | switches | interruptions | downtime s | on-demand h |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, row in rows.items():
        lines.append(f"| {name} | {row['cost_usd']:.2f} | {row['savings_pct']:.2f} | {row['switches']} | "
                     f"{row['interruptions']} | {row['downtime_s']:.0f} | {row['ondemand_hours']:.1f} |")
    ours, oracle = rows["spot_optimizer"], rows["oracle"]
    capacity, stay = rows["capacity_optimized"], rows["stay_put"]
    over_oracle = 100.0 * (ours["cost_usd"] / oracle["cost_usd"] - 1.0)
    beats_capacity = ours["cost_usd"] <= capacity["cost_usd"] and ours["downtime_s"] <= capacity["downtime_s"]
    lines += [
        "",
        f"- spot_optimizer vs oracle: {over_oracle:+.2f} % cost (target ≤ +3 %): "
        f"{'met' if over_oracle <= 3.0 else 'NOT met'}",
        f"- beats capacity_optimized on cost and downtime: {'yes' if beats_capacity else 'NO'} "
        f"({ours['cost_usd']:.2f} vs {capacity['cost_usd']:.2f} USD, "
        f"{ours['downtime_s']:.0f} vs {capacity['downtime_s']:.0f} s)",
        f"- less downtime than stay_put: {'yes' if ours['downtime_s'] < stay['downtime_s'] else 'NO'} "
        f"({ours['downtime_s']:.0f} vs {stay['downtime_s']:.0f} s)",
        "",
        "```",
        command(types),
        "```",
        "",
    ]
    return "\n".join(lines)


def run() -> str:
    """The markdown section for docs/benchmarks.md (empty note when the shared data is absent)."""
    header = "## Backtest: decision engine vs baselines on real eu-west-1 spot prices\n\n"
    if not PRICES.is_file():
        return header + f"Skipped: {DATA} is absent.\n"
    return header + "\n".join(_section(label, types) for label, types in TYPE_SETS.items())


if __name__ == "__main__":
    print(run())  # noqa: T201
