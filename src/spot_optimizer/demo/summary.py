"""The demo's summary: what happened, counted from the operator API, and what it cost, from the ledger."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from spot_optimizer.demo.ledger import Ledger
from spot_optimizer.demo.stack import OperatorClient

SUMMARY_KEYS = ("launches", "promotions", "terminations", "notices", "switches", "ondemand_fallbacks",
                "downtime_s", "cost_usd", "ondemand_cost_usd", "savings_pct", "commands_failed")


def summarize(op: OperatorClient, ledger: Ledger) -> dict[str, Any]:
    commands = op.get("/commands", limit=10000)
    decisions = op.get("/decisions")
    notices = op.get("/notices")
    succeeded = [c for c in commands if c["status"] == "succeeded"]
    actions = [a for d in decisions for a in d.get("actions", []) if isinstance(a, dict)]
    return {
        "launches": sum(1 for c in succeeded if c["type"] == "launch"),
        "promotions": sum(1 for c in succeeded if c["type"] == "promote"),
        "terminations": sum(1 for c in succeeded if c["type"] == "terminate" and not (c["result"] or {}).get("noop")),
        "notices": len(notices),
        "switches": sum(1 for a in actions if a.get("trigger") == "switch" and a.get("kind") == "launch"),
        "ondemand_fallbacks": sum(1 for a in actions if a.get("kind") == "fallback_to_on_demand"),
        "downtime_s": round(sum(ledger.downtime_s.values()), 1),
        "cost_usd": round(ledger.cost_usd, 6),
        "ondemand_cost_usd": round(ledger.ondemand_cost_usd, 6),
        "savings_pct": round(ledger.savings_pct, 2),
        "commands_failed": sum(1 for c in commands if c["status"] == "failed"),
    }


def summary_table(summary: dict[str, Any], steps: list[Any]) -> tuple[Table, Table]:
    flows = Table(title="Scenario")
    flows.add_column("step")
    flows.add_column("result")
    flows.add_column("what happened")
    for step in steps:
        flows.add_row(step.name, "[green]ok" if step.ok else "[red]NOT SEEN", step.detail)
    figures = Table(title="Summary (emulated time)")
    figures.add_column("figure")
    figures.add_column("value", justify="right")
    for key in SUMMARY_KEYS:
        figures.add_row(key, str(summary[key]))
    return flows, figures
