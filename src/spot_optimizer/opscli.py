"""Operator CLI over the operator API: agents, commands, toggles, events, and more.

Every command takes `--server URL` and `--token T` (or SPOT_OPTIMIZER_SERVER / SPOT_OPTIMIZER_TOKEN), prints
rich tables, and with `--json` prints JSON for scripts. HTTP errors and an unreachable server exit non-zero.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

DEFAULT_SERVER = "http://127.0.0.1:8080"
API = "/api/v1"

ServerOpt = typer.Option(DEFAULT_SERVER, "--server", envvar="SPOT_OPTIMIZER_SERVER", help="Control plane URL.")
TokenOpt = typer.Option(None, "--token", envvar="SPOT_OPTIMIZER_TOKEN", help="Admin token.")
JsonOpt = typer.Option(False, "--json", help="Print JSON instead of a table.")


def _fail(message: str, code: int = 1) -> typer.Exit:
    Console(stderr=True).print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    return typer.Exit(code)


def _call(server: str, token: str | None, method: str, path: str, **kwargs: Any) -> Any:
    if not token:
        raise _fail("no admin token: pass --token or set SPOT_OPTIMIZER_TOKEN", 2)
    url = server.rstrip("/") + API + path
    try:
        response = httpx.request(method, url, headers={"Authorization": f"Bearer {token}"}, timeout=30, **kwargs)
    except httpx.HTTPError as exc:
        raise _fail(f"cannot reach the server at {server}: {exc}", 2) from exc
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        raise _fail(f"{method} {path} failed with HTTP {response.status_code}: {detail}")
    return response.json()


def _emit(data: Any, as_json: bool, columns: list[str], title: str) -> None:
    if as_json:
        typer.echo(json.dumps(data, indent=2, sort_keys=True))
        return
    rows = data if isinstance(data, list) else [data]
    table = Table(title=title)
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*(_cell(row.get(col)) for col in columns))
    Console().print(table)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_cell(v)}" for k, v in value.items()) or "-"
    return str(value)


def agents(
    workload: str | None = typer.Option(None, "--workload", help="Only this workload."),
    as_json: bool = JsonOpt,
    server: str = ServerOpt,
    token: str | None = TokenOpt,
) -> None:
    """List agents: id, instance, workload, state, role, last heartbeat, toggles."""
    data = _call(server, token, "GET", "/agents", params=_params(workload=workload))
    cols = ["agent_id", "instance_id", "workload", "state", "role", "pool", "last_heartbeat", "toggles"]
    _emit(data, as_json, cols, "Agents")


def workloads(as_json: bool = JsonOpt, server: str = ServerOpt, token: str | None = TokenOpt) -> None:
    """List workloads."""
    _emit(_call(server, token, "GET", "/workloads"), as_json, ["name", "created_at"], "Workloads")


def instances(
    workload: str | None = typer.Option(None, "--workload"),
    as_json: bool = JsonOpt,
    server: str = ServerOpt,
    token: str | None = TokenOpt,
) -> None:
    """List instances from the agents' inventory reports."""
    data = _call(server, token, "GET", "/instances", params=_params(workload=workload))
    cols = ["instance_id", "workload", "role", "state", "pool", "managed", "updated_at"]
    _emit(data, as_json, cols, "Instances")


def commands(
    agent: str | None = typer.Option(None, "--agent", help="Only this agent's commands."),
    workload: str | None = typer.Option(None, "--workload"),
    status: str | None = typer.Option(None, "--status", help="pending|delivered|succeeded|failed|expired"),
    as_json: bool = JsonOpt,
    server: str = ServerOpt,
    token: str | None = TokenOpt,
) -> None:
    """List commands and their results."""
    data = _call(server, token, "GET", "/commands", params=_params(agent_id=agent, workload=workload, status=status))
    cols = ["command_id", "agent_id", "type", "status", "delivery_count", "issued_at", "result", "error"]
    _emit(data, as_json, cols, "Commands")


def events(
    workload: str | None = typer.Option(None, "--workload"),
    agent: str | None = typer.Option(None, "--agent"),
    since: str | None = typer.Option(None, "--since", help="ISO 8601 time, e.g. 2025-01-31T12:00:00Z"),
    kind: str | None = typer.Option(None, "--kind"),
    as_json: bool = JsonOpt,
    server: str = ServerOpt,
    token: str | None = TokenOpt,
) -> None:
    """The event log, oldest first."""
    params = _params(workload=workload, agent_id=agent, since=since, kind=kind)
    data = _call(server, token, "GET", "/events", params=params)
    _emit(data, as_json, ["ts", "kind", "workload", "agent_id", "message"], "Events")


def _on_off(name: str, value: str | None) -> bool | None:
    if value is None:
        return None
    lowered = value.lower()
    if lowered in ("on", "true", "yes", "1"):
        return True
    if lowered in ("off", "false", "no", "0"):
        return False
    raise typer.BadParameter(f"{name} must be on or off, not {value!r}")


def toggle(
    agent: str = typer.Argument(..., help="Agent id."),
    auto_switching: str | None = typer.Option(None, "--auto-switching", help="on|off"),
    auto_terminate: str | None = typer.Option(None, "--auto-terminate", help="on|off"),
    manual_replica: str | None = typer.Option(None, "--manual-replica", help="on|off"),
    emergency_only: str | None = typer.Option(None, "--emergency-only", help="on|off"),
    as_json: bool = JsonOpt,
    server: str = ServerOpt,
    token: str | None = TokenOpt,
) -> None:
    """Set an agent's toggles (only those given change)."""
    changes = {
        "auto_switching": _on_off("--auto-switching", auto_switching),
        "auto_terminate": _on_off("--auto-terminate", auto_terminate),
        "manual_replica": _on_off("--manual-replica", manual_replica),
        "emergency_only": _on_off("--emergency-only", emergency_only),
    }
    body = {k: v for k, v in changes.items() if v is not None}
    if not body:
        raise _fail("give at least one of --auto-switching, --auto-terminate, --manual-replica, --emergency-only", 2)
    data = _call(server, token, "PATCH", f"/agents/{agent}/toggles", json=body)
    _emit(data, as_json, ["agent_id", "instance_id", "toggles"], "Toggles")


def _issue(server: str, token: str | None, agent: str, type_: str, params: dict[str, Any], as_json: bool) -> None:
    data = _call(server, token, "POST", "/commands", json={"agent_id": agent, "type": type_, "params": params})
    _emit(data, as_json, ["command_id", "agent_id", "type", "status", "params"], "Command issued")


AgentOpt = typer.Option(..., "--agent", help="Agent that executes the command.")


def command_launch(
    agent: str = AgentOpt,
    instance_type: str = typer.Option(..., "--instance-type"),
    az: str | None = typer.Option(None, "--az", help="Availability zone (default: the agent picks)."),
    market: str = typer.Option("spot", "--market", help="spot|on-demand"),
    role: str = typer.Option("replica", "--role", help="primary|replica"),
    as_json: bool = JsonOpt,
    server: str = ServerOpt,
    token: str | None = TokenOpt,
) -> None:
    """Launch an instance like the agent's own (same AMI, network, profile, key)."""
    params = {"instance_type": instance_type, "az": az, "market": market, "role": role}
    _issue(server, token, agent, "launch", params, as_json)


def command_terminate(
    agent: str = AgentOpt,
    instance_id: str = typer.Option(..., "--instance-id"),
    reason: str = typer.Option("requested by operator", "--reason"),
    as_json: bool = JsonOpt,
    server: str = ServerOpt,
    token: str | None = TokenOpt,
) -> None:
    """Terminate an instance the workload manages."""
    _issue(server, token, agent, "terminate", {"instance_id": instance_id, "reason": reason}, as_json)


def command_promote(
    agent: str = AgentOpt,
    instance_id: str = typer.Option(..., "--instance-id", help="The replica that becomes primary."),
    old_instance_id: str | None = typer.Option(None, "--old-instance-id", help="Default: the agent's own."),
    as_json: bool = JsonOpt,
    server: str = ServerOpt,
    token: str | None = TokenOpt,
) -> None:
    """Promote a replica to primary (the old primary becomes a zombie)."""
    params = {"instance_id": instance_id, "old_instance_id": old_instance_id}
    _issue(server, token, agent, "promote", params, as_json)


def command_collect_inventory(
    agent: str = AgentOpt, as_json: bool = JsonOpt, server: str = ServerOpt, token: str | None = TokenOpt
) -> None:
    """Ask the agent for a fresh inventory report."""
    _issue(server, token, agent, "collect_inventory", {}, as_json)


def command_collect_prices(
    agent: str = AgentOpt,
    instance_type: list[str] = typer.Option([], "--instance-type", help="Repeatable; default: the agent's."),
    as_json: bool = JsonOpt,
    server: str = ServerOpt,
    token: str | None = TokenOpt,
) -> None:
    """Ask the agent for a fresh price report."""
    _issue(server, token, agent, "collect_prices", {"instance_types": list(instance_type)}, as_json)


def _params(**kwargs: str | None) -> dict[str, str]:
    return {k: v for k, v in kwargs.items() if v is not None}


def register(app: typer.Typer) -> None:
    app.command("agents")(agents)
    app.command("workloads")(workloads)
    app.command("instances")(instances)
    app.command("commands")(commands)
    app.command("events")(events)
    app.command("toggle")(toggle)
    command_app = typer.Typer(help="Issue a manual command to an agent.", no_args_is_help=True)
    command_app.command("launch")(command_launch)
    command_app.command("terminate")(command_terminate)
    command_app.command("promote")(command_promote)
    command_app.command("collect-inventory")(command_collect_inventory)
    command_app.command("collect-prices")(command_collect_prices)
    app.add_typer(command_app, name="command")
