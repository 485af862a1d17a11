"""Jinja filters for the dashboard: money, times and short ids."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from jinja2 import Environment


def money(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "—"
    sign = "-" if value < 0 else ""
    return f"{sign}${abs(value):,.{digits}f}"


def iso(value: datetime | None) -> str:
    return value.astimezone(UTC).isoformat(timespec="seconds") if value else ""


def when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if value else "—"


def short(value: str | None, n: int = 8) -> str:
    return (value or "")[:n]


def compact(value: Any) -> str:
    if not value:
        return ""
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items() if v is not None)
    return json.dumps(value, sort_keys=True, default=str)


def pct(saved: float, base: float) -> str:
    return f"{100 * saved / base:.0f} %" if base > 0 else "—"


def register_filters(env: Environment) -> None:
    env.filters.update(money=money, iso=iso, when=when, short=short, compact=compact, pct=pct)
