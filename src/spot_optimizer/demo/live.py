"""A live, readable event log in the terminal: the server's event log, tailed from the operator API."""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.markup import escape

from spot_optimizer.demo.stack import OperatorClient

STYLES = {
    "notice_received": "bold yellow",
    "decision": "bold magenta",
    "command_issued": "cyan",
    "command_finished": "green",
    "command_expired": "red",
    "role_changed": "bold green",
    "agent_registered": "blue",
    "agent_offline": "red",
    "agent_online": "blue",
}
QUIET = {"command_delivered", "inventory_reported", "agent_state_changed"}
ROUTINE_COMMANDS = {"collect_prices", "collect_inventory"}  # issued every few seconds: not news


class EventTail:
    def __init__(self, op: OperatorClient, console: Console, interval_s: float = 0.5) -> None:
        self.op, self.console, self.interval_s = op, console, interval_s
        self.seen: set[int] = set()
        self.routine: set[str] = set()  # ids of routine commands, whose later events are hidden too
        self.since: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def poll(self) -> list[dict[str, Any]]:
        events = self.op.get("/events", since=self.since, limit=500)
        fresh = sorted((e for e in events if e["id"] not in self.seen), key=lambda e: e["id"])
        for event in fresh:
            self.seen.add(event["id"])
            self.since = event["ts"]
            if not self._newsworthy(event):
                continue
            failed = event["kind"] == "command_finished" and "failed" in event["message"]
            style = "red" if failed else STYLES.get(event["kind"], "white")
            ts = datetime.fromisoformat(event["ts"]).strftime("%H:%M:%S")
            workload = event.get("workload") or "-"
            self.console.print(f"[dim]{ts}[/] [bold]{escape(workload):>12}[/] [{style}]{escape(event['message'])}[/]",
                               highlight=False, soft_wrap=True)
        return fresh

    def _newsworthy(self, event: dict[str, Any]) -> bool:
        if event["kind"] in QUIET:
            return False
        data = event.get("data") or {}
        if event["kind"] == "command_issued" and data.get("type") in ROUTINE_COMMANDS:
            self.routine.add(event.get("command_id") or "")
            return False
        if event.get("command_id") and event["command_id"] in self.routine:
            return False
        if event["kind"] == "decision":
            acted = [a for a in data.get("actions", []) if a.get("kind") != "nothing"]
            if not acted:
                return False
            event["message"] = "decision: " + "; ".join(
                f"{a['kind']} ({(a.get('rationale') or {}).get('text', '')})" for a in acted)
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.poll()
            except Exception:  # noqa: BLE001, S112 - the server may be restarting; the next poll catches up
                continue

    def start(self) -> EventTail:
        self._thread = threading.Thread(target=self._run, name="event-tail", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        try:
            self.poll()
        except Exception:  # noqa: BLE001 - best effort at the end
            pass
