"""Presenting a backtest: a rich table and a cost-over-time plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table

from spot_optimizer.backtest.sim import Outcome


def table(summary: dict[str, Any]) -> Table:
    inputs = summary["inputs"]
    out = Table(title=(f"Backtest {inputs['region']} {inputs['start']} .. {inputs['end']} — "
                       f"{summary['hours']} h, {summary['pools']} pools, {inputs['instances']} workloads, "
                       f"seed {inputs['seed']}"))
    for column in ("strategy", "cost USD", "savings %", "switches", "interruptions", "downtime s",
                   "on-demand h"):
        out.add_column(column, justify="left" if column == "strategy" else "right")
    for name, row in summary["strategies"].items():
        out.add_row(name, f"{row['cost_usd']:.2f}", f"{row['savings_pct']:.2f}", str(row["switches"]),
                    str(row["interruptions"]), f"{row['downtime_s']:.0f}", f"{row['ondemand_hours']:.1f}")
    return out


def plot(results: dict[str, Outcome], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 5))
    for name, out in results.items():
        ax.plot(range(1, len(out.curve) + 1), out.curve, label=name)
    ax.set_xlabel("hours since start")
    ax.set_ylabel("cumulative cost (USD)")
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
