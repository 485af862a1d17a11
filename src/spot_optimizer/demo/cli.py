"""`spot-optimizer demo`: the emulated region, a server on SQLite and agents, with a live scenario."""

from __future__ import annotations

import json
import logging
import signal
import tempfile
import time
from pathlib import Path
from types import FrameType

import typer
from rich.console import Console


def demo(
    duration: float = typer.Option(300.0, "--duration", min=30, help="Upper bound in seconds for the scenario."),
    workloads: int = typer.Option(3, "--workloads", min=1, max=20, help="Workloads (one primary each at start)."),
    seed: int = typer.Option(7, "--seed", help="Seed of the synthetic market and the emulator's draws."),
    prices: Path | None = typer.Option(None, "--prices", exists=True, dir_okay=False,
                                       help="Spot price trace CSV(.gz) to replay; default: a synthetic market."),
    speed: float = typer.Option(10.0, "--speed", min=1.0, max=60.0,
                                help="How much faster than real time the emulated world runs."),
    summary_json: Path | None = typer.Option(None, "--summary-json", help="Write the summary as JSON here."),
    run_dir: Path | None = typer.Option(None, "--run-dir", help="Logs, databases and agent dirs (default: temp)."),
) -> None:
    """Run the whole system on this machine and play every flow: a switch on a price move, a replica on
    a rebalance recommendation, a promotion on an interruption notice, a capacity error, on-demand
    fallback and the return to spot, zombies terminated. Ctrl-C stops everything cleanly."""
    from spot_optimizer.demo.ledger import CostSampler
    from spot_optimizer.demo.live import EventTail
    from spot_optimizer.demo.scenario import AGENT_ARGS, SERVER_FLAGS, Scenario
    from spot_optimizer.demo.stack import LocalStack
    from spot_optimizer.demo.summary import summarize, summary_table

    console = Console()
    logging.basicConfig(level=logging.WARNING)
    if summary_json is not None and summary_json.parent and not summary_json.parent.exists():
        raise typer.BadParameter(f"directory {summary_json.parent} does not exist", param_hint="--summary-json")
    base = run_dir or Path(tempfile.mkdtemp(prefix="spot-optimizer-demo-"))
    stop_requested = False

    def _interrupt(signum: int, _frame: FrameType | None) -> None:
        nonlocal stop_requested
        stop_requested = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _interrupt)
    console.rule("[bold]Spot Optimizer demo")
    console.print(f"run directory: {base}  (server.log, region/instances/<id>/agent.file.log)")
    stack = LocalStack(
        base, workloads=workloads, seed=seed, speed=speed, prices=prices,
        server_flags=SERVER_FLAGS, agent_args=(*AGENT_ARGS, "--log-level", "INFO"),
    )
    tail: EventTail | None = None
    sampler: CostSampler | None = None
    scenario: Scenario | None = None
    summary: dict[str, object] | None = None
    started = time.monotonic()
    try:
        with console.status("starting the emulated region, the server and one agent per instance ..."):
            stack.start()
            primaries = stack.region.seed.primaries
            for instance_id in primaries.values():
                stack.wait_agent(instance_id, timeout_s=90)
        console.print(f"[bold]dashboard[/]: {stack.server.url}/   [bold]API docs[/]: {stack.server.url}/docs   "
                      f"[bold]admin token[/]: {stack.admin_token}")
        console.print(f"AWS endpoint (emulated, {stack.region.region}): {stack.region.endpoint_url}; "
                      f"world speed x{speed:g}; {len(primaries)} workloads: {', '.join(primaries)}")
        itype = stack.describe(next(iter(primaries.values())))["InstanceType"]
        sampler = CostSampler(stack.region, {w: stack.describe(i)["InstanceType"] for w, i in primaries.items()})
        sampler.start()
        tail = EventTail(stack.op, console).start()
        scenario = Scenario(stack, console, started + duration, list(primaries), itype)
        scenario.run()
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: stopping everything ...")
    finally:
        if tail is not None:
            tail.stop()
        ledger = sampler.stop() if sampler is not None else None
        if ledger is not None and stack.server.alive():
            try:
                summary = summarize(stack.op, ledger)
            except Exception as exc:  # noqa: BLE001 - the summary must not stop the clean-up
                console.print(f"[red]could not build the summary: {exc}")
        with console.status("stopping agents, the emulated region and the server ..."):
            stack.stop()
    if summary is not None:
        flows, figures = summary_table(summary, scenario.results if scenario else [])
        console.print(flows)
        console.print(figures)
        if summary_json is not None:
            summary_json.write_text(json.dumps(summary, indent=2) + "\n")
            console.print(f"summary written to {summary_json}")
    console.print(f"everything stopped; logs are in {base}")
    if stop_requested or summary is None:
        raise typer.Exit(130 if stop_requested else 1)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
