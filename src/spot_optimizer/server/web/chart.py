"""The workload page's price chart, drawn as inline SVG on the server (no JavaScript library, no CDN).

Lines: the spot price of each allowed pool over time (steps), a dashed on-demand line per instance type,
and a thick band over the pool the workload's primary ran in, with a marker at every pool change.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from spot_optimizer.core.models import Pool
from spot_optimizer.server.web.fleet import PriceBook, PriceKey

WIDTH, HEIGHT = 900, 320
LEFT, RIGHT, TOP, BOTTOM = 60, 20, 16, 40
COLORS = ["#2563eb", "#16a34a", "#d97706", "#9333ea", "#0891b2", "#db2777", "#65a30d", "#4b5563"]
MAX_SPAN = timedelta(days=7)


@dataclass
class Stint:
    """The primary ran in `pool` from `start` to `end`."""

    start: datetime
    end: datetime
    instance_id: str
    key: PriceKey | None
    label: str


@dataclass
class Chart:
    width: int = WIDTH
    height: int = HEIGHT
    lines: list[dict[str, Any]] = field(default_factory=list)
    ondemand: list[dict[str, Any]] = field(default_factory=list)
    ran: list[dict[str, Any]] = field(default_factory=list)
    changes: list[dict[str, Any]] = field(default_factory=list)
    x_ticks: list[dict[str, Any]] = field(default_factory=list)
    y_ticks: list[dict[str, Any]] = field(default_factory=list)
    empty: bool = True


def chart_keys(allowed_pools: list[Any], member_keys: set[PriceKey], book: PriceBook) -> list[PriceKey]:
    """The workload's allowed pools; when none are configured, every AZ priced for the types it uses."""
    keys: set[PriceKey] = set()
    for entry in allowed_pools:
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            pool = Pool.parse(entry) if isinstance(entry, str) else Pool.model_validate(entry)
            keys.add((pool.region, pool.instance_type, pool.az))
    if not keys:
        regions_types = {(r, t) for r, t, _ in member_keys}
        keys = {k for k in book.spot if (k[0], k[1]) in regions_types} | member_keys
    return sorted(keys)


def build_chart(book: PriceBook, keys: list[PriceKey], stints: list[Stint], now: datetime) -> Chart:
    chart = Chart()
    series = {k: book.spot.get(k, []) for k in keys}
    times = [t for pts in series.values() for t, _ in pts] + [s.start for s in stints]
    if not times:
        return chart
    t0 = max(min(times), now - MAX_SPAN)
    t1 = max(now, max(times))
    if t1 <= t0:
        t0 = t1 - timedelta(hours=1)
    types = sorted({k[:2] for k in keys})
    od_rows = [(rt, book.od(*rt)) for rt in types]
    values = [p for pts in series.values() for t, p in pts if t >= t0] + [r.price for _, r in od_rows if r]
    values += [book.spot_at(k, t0) or 0.0 for k in keys if series[k]]
    if not values:
        return chart
    y_max = max(values) * 1.1 or 1.0
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(t: datetime) -> float:
        return round(LEFT + plot_w * (t - t0).total_seconds() / (t1 - t0).total_seconds(), 1)

    def y(price: float) -> float:
        return round(TOP + plot_h * (1 - price / y_max), 1)

    def steps(key: PriceKey, start: datetime, end: datetime) -> str:
        points = series.get(key) or []
        price = book.spot_at(key, start)
        if price is None:
            return ""
        d = [f"M{x(start)},{y(price)}"]
        for ts, value in points:
            if start < ts < end:
                d.append(f"H{x(ts)}V{y(value)}")
        d.append(f"H{x(end)}")
        return "".join(d)

    color_of = {k: COLORS[i % len(COLORS)] for i, k in enumerate(keys)}
    for key in keys:
        if series[key]:
            chart.lines.append({"d": steps(key, t0, t1), "color": color_of[key], "label": f"{key[1]} {key[2]}"})
    for (_region, itype), row in od_rows:
        if row is not None:
            label = f"on-demand {itype}" + (" (estimate)" if row.estimated else "")
            chart.ondemand.append({"y": y(row.price), "label": label, "price": row.price})
    for i, stint in enumerate(stints):
        start, end = max(stint.start, t0), min(stint.end, t1)
        if end <= start:
            continue
        d = steps(stint.key, start, end) if stint.key else ""
        chart.ran.append({"d": d, "x1": x(start), "x2": x(end), "label": stint.label})
        if i > 0:
            at = x(start)
            anchor = "end" if at > WIDTH * 0.7 else "start"
            label_y = HEIGHT - BOTTOM - 6 - 13 * (i % 3)  # near the zero line, clear of the on-demand labels
            chart.changes.append({"x": at, "label": stint.label, "ts": stint.start, "anchor": anchor,
                                  "tx": at - 4 if anchor == "end" else at + 4, "ty": label_y})
    for i in range(5):
        t = t0 + (t1 - t0) * i / 4
        anchor = "start" if i == 0 else "end" if i == 4 else "middle"
        chart.x_ticks.append({"x": x(t), "label": t.strftime("%m-%d %H:%M"), "anchor": anchor})
        price = y_max * i / 4
        chart.y_ticks.append({"y": y(price), "label": f"${price:.3f}"})
    chart.empty = False
    return chart
