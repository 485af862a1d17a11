"""Price data the shim serves: a spot price trace (real file or seeded synthetic) and on-demand list prices.

Plain data with pure query functions. Trace times are epoch seconds of the *trace* (the clock maps
them to wall time); a price holds from its timestamp until the next record of the same pool.
"""

from __future__ import annotations

import bisect
import csv
import gzip
import heapq
import io
import math
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from pathlib import Path

LINUX = "Linux/UNIX"
LINUX_VPC = "Linux/UNIX (Amazon VPC)"

# Synthetic catalogue: type -> (on-demand USD/h in eu-west-1, vCPU, memory GiB). Close to list prices.
SYNTHETIC_TYPES: dict[str, tuple[float, int, float]] = {
    "m5.large": (0.107, 2, 8),
    "m5.xlarge": (0.214, 4, 16),
    "m5.2xlarge": (0.428, 8, 32),
    "m5a.large": (0.096, 2, 8),
    "m6i.large": (0.107, 2, 8),
    "m6i.xlarge": (0.214, 4, 16),
    "c5.large": (0.096, 2, 4),
    "c5.xlarge": (0.192, 4, 8),
    "c6i.large": (0.0912, 2, 4),
    "r5.large": (0.141, 2, 16),
    "r5.xlarge": (0.282, 4, 32),
    "r6i.large": (0.141, 2, 16),
    "t3.medium": (0.0456, 2, 4),
    "t3.large": (0.0912, 2, 8),
}

REGION_LOCATIONS = {
    "us-east-1": "US East (N. Virginia)",
    "us-east-2": "US East (Ohio)",
    "us-west-1": "US West (N. California)",
    "us-west-2": "US West (Oregon)",
    "eu-west-1": "EU (Ireland)",
    "eu-west-2": "EU (London)",
    "eu-west-3": "EU (Paris)",
    "eu-central-1": "EU (Frankfurt)",
    "eu-north-1": "EU (Stockholm)",
    "ap-southeast-1": "Asia Pacific (Singapore)",
    "ap-southeast-2": "Asia Pacific (Sydney)",
    "ap-northeast-1": "Asia Pacific (Tokyo)",
}


@dataclass(frozen=True)
class PriceRecord:
    timestamp: float  # trace epoch seconds
    availability_zone: str
    instance_type: str
    product_description: str
    price: float


@dataclass
class _Series:
    times: list[float] = field(default_factory=list)
    prices: list[float] = field(default_factory=list)

    def add(self, t: float, price: float) -> None:
        if self.times and t < self.times[-1]:
            i = bisect.bisect_right(self.times, t)
            self.times.insert(i, t)
            self.prices.insert(i, price)
        else:
            self.times.append(t)
            self.prices.append(price)


class SpotMarket:
    """Spot price series per pool (instance type, AZ, product). Thread-safe for reads; `set_price` appends."""

    def __init__(self, region: str) -> None:
        self.region = region
        self._series: dict[tuple[str, str, str], _Series] = {}

    # --- building -----------------------------------------------------------------------------
    def add(self, record: PriceRecord) -> None:
        key = (record.instance_type, record.availability_zone, record.product_description)
        self._series.setdefault(key, _Series()).add(record.timestamp, record.price)

    def set_price(self, instance_type: str, az: str, price: float, at: float, product: str = LINUX) -> None:
        """A price move at trace time `at` (used by scenarios to force a switch)."""
        self.add(PriceRecord(at, az, instance_type, product, price))

    # --- querying -----------------------------------------------------------------------------
    @property
    def pools(self) -> list[tuple[str, str, str]]:
        return sorted(self._series)

    @property
    def instance_types(self) -> list[str]:
        return sorted({k[0] for k in self._series})

    @property
    def availability_zones(self) -> list[str]:
        return sorted({k[1] for k in self._series})

    def time_range(self) -> tuple[float, float]:
        firsts = [s.times[0] for s in self._series.values() if s.times]
        lasts = [s.times[-1] for s in self._series.values() if s.times]
        return min(firsts), max(lasts)

    def price_at(self, instance_type: str, az: str, at: float, product: str = LINUX) -> float | None:
        series = self._series.get((instance_type, az, product))
        if not series:
            return None
        i = bisect.bisect_right(series.times, at) - 1
        return series.prices[i] if i >= 0 else None

    def history(
        self,
        start: float | None,
        end: float,
        instance_types: Iterable[str] = (),
        azs: Iterable[str] = (),
        products: Iterable[str] = (),
    ) -> Iterator[PriceRecord]:
        """Records in effect during [start, end], newest first, including the one in effect at start.

        Each filter is a list of patterns (`*` and `?` wildcards, as EC2 filters allow); empty = all.
        `Linux/UNIX (Amazon VPC)` matches the `Linux/UNIX` series (the trace has only the latter).
        """
        types, zones = list(instance_types), list(azs)
        prods = [LINUX if p == LINUX_VPC else p for p in products]

        def match(value: str, patterns: list[str]) -> bool:
            return not patterns or any(fnmatchcase(value, p) for p in patterns)

        streams = []
        for (itype, az, prod), series in self._series.items():
            if not (match(itype, types) and match(az, zones) and match(prod, prods)):
                continue
            hi = bisect.bisect_right(series.times, end)
            lo = 0 if start is None else max(0, bisect.bisect_right(series.times, start) - 1)
            if hi <= lo:
                continue
            streams.append(_newest_first(series, itype, az, prod, lo, hi))
        return heapq.merge(*streams, key=lambda r: (-r.timestamp, r.availability_zone, r.instance_type))


def _newest_first(series: _Series, itype: str, az: str, prod: str, lo: int, hi: int) -> Iterator[PriceRecord]:
    for i in range(hi - 1, lo - 1, -1):
        yield PriceRecord(series.times[i], az, itype, prod, series.prices[i])


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")  # noqa: SIM115 - closed by the caller's with


def load_trace(path: Path, region: str, instance_types: Iterable[str] | None = None) -> SpotMarket:
    """Read a CSV (optionally .gz) with columns timestamp, availability_zone, instance_type,
    product_description, spot_price; keep the rows of `region` (and of `instance_types` if given)."""
    wanted = set(instance_types) if instance_types else None
    market = SpotMarket(region)
    with _open_text(path) as fh:
        for row in csv.DictReader(fh):
            az = row["availability_zone"]
            if not az.startswith(region):
                continue
            if wanted is not None and row["instance_type"] not in wanted:
                continue
            ts = datetime.fromisoformat(row["timestamp"].replace("Z", "+00:00")).timestamp()
            market.add(PriceRecord(ts, az, row["instance_type"], row["product_description"], float(row["spot_price"])))
    if not market.pools:
        raise ValueError(f"{path} has no spot prices for region {region}")
    return market


def synthetic_market(
    region: str,
    azs: list[str],
    seed: int,
    start: datetime,
    history: timedelta = timedelta(days=7),
    horizon: timedelta = timedelta(days=90),
    catalogue: dict[str, tuple[float, int, float]] | None = None,
) -> SpotMarket:
    """A seeded random-walk market: each pool starts at 28-50 % of on-demand and moves every 1-8 h."""
    rng = random.Random(seed)
    market = SpotMarket(region)
    t0, t1 = (start - history).timestamp(), (start + horizon).timestamp()
    for itype, (od, _, _) in sorted((catalogue or SYNTHETIC_TYPES).items()):
        for az in azs:
            ratio = rng.uniform(0.28, 0.5)
            t = t0
            while t <= t1:
                market.add(PriceRecord(t, az, itype, LINUX, round(od * ratio, 6)))
                ratio = min(0.8, max(0.2, ratio * math.exp(rng.gauss(0.0, 0.04))))
                t += rng.uniform(3600, 8 * 3600)
    return market


@dataclass(frozen=True)
class OnDemandPrice:
    instance_type: str
    price: float
    vcpu: int | None = None
    memory: str | None = None


class OnDemandTable:
    def __init__(self, region: str, prices: dict[str, OnDemandPrice], publication_date: str) -> None:
        self.region = region
        self.prices = prices
        self.publication_date = publication_date

    def get(self, instance_type: str) -> OnDemandPrice | None:
        return self.prices.get(instance_type)


def load_ondemand(path: Path, region: str) -> OnDemandTable:
    """Read `region,instance_type,vcpu,memory,ondemand_usd_per_hour,publication_date` rows of `region`."""
    prices: dict[str, OnDemandPrice] = {}
    published = "2025-04-04T00:00:00Z"
    with _open_text(path) as fh:
        for row in csv.DictReader(fh):
            if row.get("region") != region:
                continue
            vcpu = row.get("vcpu")
            prices[row["instance_type"]] = OnDemandPrice(
                row["instance_type"],
                float(row["ondemand_usd_per_hour"]),
                int(vcpu) if vcpu and vcpu.isdigit() else None,
                row.get("memory") or None,
            )
            published = row.get("publication_date") or published
    if not prices:
        raise ValueError(f"{path} has no on-demand prices for region {region}")
    return OnDemandTable(region, prices, published)


def synthetic_ondemand(region: str, catalogue: dict[str, tuple[float, int, float]] | None = None) -> OnDemandTable:
    prices = {
        t: OnDemandPrice(t, od, vcpu, f"{mem:g} GiB") for t, (od, vcpu, mem) in (catalogue or SYNTHETIC_TYPES).items()
    }
    return OnDemandTable(region, prices, datetime(2025, 4, 4, tzinfo=UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
