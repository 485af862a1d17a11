"""Loaders for the backtest's real inputs: spot price history, on-demand prices, the Spot Advisor feed.

Every problem a user can fix (missing file, garbled row, unknown type, empty window) raises
`BacktestInputError` with a message that names the file and what is wrong.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

import numpy as np

SPOT_COLUMNS = ("timestamp", "availability_zone", "instance_type", "spot_price")
ONDEMAND_COLUMNS = ("region", "instance_type", "ondemand_usd_per_hour")
LINUX = "Linux/UNIX"


class BacktestInputError(Exception):
    """An input the user gave cannot be used; the message says which and why."""


def _open_text(path: Path) -> IO[str]:
    if not path.is_file():
        raise BacktestInputError(f"{path}: no such file")
    try:
        if path.suffix == ".gz":
            return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
        return path.open("r", encoding="utf-8", newline="")
    except OSError as exc:
        raise BacktestInputError(f"{path}: cannot be read ({exc})") from exc


def _check_columns(path: Path, header: Iterable[str] | None, needed: tuple[str, ...]) -> None:
    missing = [c for c in needed if c not in (header or [])]
    if missing:
        raise BacktestInputError(f"{path}: not the expected CSV, missing column(s) {', '.join(missing)}")


def parse_time(value: str) -> datetime:
    """ISO 8601 to an aware UTC datetime (naive means UTC)."""
    parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def load_spot_prices(path: Path, types: set[str]) -> dict[tuple[str, str], list[tuple[float, float]]]:
    """(type, az) -> [(epoch seconds, USD/h)] sorted by time, Linux/UNIX only, for the given types."""
    records: dict[tuple[str, str], list[tuple[float, float]]] = {}
    try:
        with _open_text(path) as handle:
            reader = csv.DictReader(handle)
            _check_columns(path, reader.fieldnames, SPOT_COLUMNS)
            for line, row in enumerate(reader, start=2):
                if row["instance_type"] not in types:
                    continue
                product = row.get("product_description")
                if product and product != LINUX:
                    continue
                try:
                    when = parse_time(row["timestamp"]).timestamp()
                    price = float(row["spot_price"])
                except (TypeError, ValueError) as exc:
                    raise BacktestInputError(f"{path}: line {line} is garbled ({exc})") from exc
                if not math.isfinite(price) or price < 0:
                    raise BacktestInputError(f"{path}: line {line} has an invalid price {row['spot_price']!r}")
                records.setdefault((row["instance_type"], row["availability_zone"]), []).append((when, price))
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as exc:
        raise BacktestInputError(f"{path}: cannot be read as CSV ({exc})") from exc
    for series in records.values():
        series.sort()
    return records


def load_ondemand(path: Path, region: str, types: set[str]) -> dict[str, float]:
    """instance type -> on-demand USD/h in `region`."""
    prices: dict[str, float] = {}
    try:
        with _open_text(path) as handle:
            reader = csv.DictReader(handle)
            _check_columns(path, reader.fieldnames, ONDEMAND_COLUMNS)
            for line, row in enumerate(reader, start=2):
                if row["region"] != region or row["instance_type"] not in types:
                    continue
                try:
                    prices[row["instance_type"]] = float(row["ondemand_usd_per_hour"])
                except (TypeError, ValueError) as exc:
                    raise BacktestInputError(f"{path}: line {line} is garbled ({exc})") from exc
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as exc:
        raise BacktestInputError(f"{path}: cannot be read as CSV ({exc})") from exc
    return prices


def load_advisor(path: Path, region: str) -> dict[str, int]:
    """instance type -> Spot Advisor interruption bucket (0..4) for Linux in `region`."""
    try:
        with _open_text(path) as handle:
            data = json.load(handle)
        linux = data["spot_advisor"][region]["Linux"]
        return {name: int(entry["r"]) for name, entry in linux.items()}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BacktestInputError(f"{path}: not valid JSON ({exc})") from exc
    except (KeyError, TypeError, ValueError) as exc:
        raise BacktestInputError(
            f"{path}: not a Spot Advisor feed with Linux data for region {region} (missing {exc})"
        ) from exc


@dataclass
class PriceGrid:
    """Spot prices on a regular time grid: `prices[p, k]` holds from `start + k*step_s`; NaN until the
    pool's first record."""

    start: datetime
    step_s: int
    pools: list[tuple[str, str]]  # (instance type, az)
    prices: np.ndarray

    @property
    def steps(self) -> int:
        return int(self.prices.shape[1])

    @property
    def end(self) -> datetime:
        return self.start + timedelta(seconds=self.steps * self.step_s)


def _hour_ceil(value: datetime) -> datetime:
    floor = value.replace(minute=0, second=0, microsecond=0)
    return floor if floor == value else floor + timedelta(hours=1)


def build_grid(
    records: dict[tuple[str, str], list[tuple[float, float]]],
    start: datetime | None,
    end: datetime | None,
    step_s: int,
    source: Path,
) -> PriceGrid:
    """Sample each pool's price (it holds until the pool's next record) at every step of the window."""
    if not records:
        raise BacktestInputError(f"{source}: no Linux/UNIX price records for the given types")
    first = min(series[0][0] for series in records.values())
    last = max(series[-1][0] for series in records.values())
    begin = start or _hour_ceil(datetime.fromtimestamp(first, UTC))
    finish = end or datetime.fromtimestamp(last, UTC).replace(minute=0, second=0, microsecond=0)
    steps = int((finish - begin).total_seconds() // step_s)
    if steps < 1:
        raise BacktestInputError(f"{source}: empty window {begin.isoformat()} .. {finish.isoformat()}")
    # Every type in every AZ seen: a pool with no record stays NaN (never usable for spot), but its
    # on-demand twin still exists, as it does in EC2.
    pools = sorted({(t, az) for t, _ in records for _, az in records})
    grid = np.full((len(pools), steps), np.nan)
    at = begin.timestamp() + step_s * np.arange(steps)
    for index, pool in enumerate(pools):
        if pool not in records:
            continue
        times = np.array([t for t, _ in records[pool]])
        values = np.array([v for _, v in records[pool]])
        position = np.searchsorted(times, at, side="right") - 1
        known = position >= 0
        grid[index, known] = values[position[known]]
    if np.isnan(grid).all():
        raise BacktestInputError(
            f"{source}: no price is known in the window {begin.isoformat()} .. {finish.isoformat()}"
        )
    return PriceGrid(start=begin, step_s=step_s, pools=pools, prices=grid)
