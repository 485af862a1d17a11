"""`spot-optimizer emulator`: run the emulated region until Ctrl-C."""

from __future__ import annotations

import logging
import shlex
import signal
import threading
from pathlib import Path
from types import FrameType

import typer


def register(app: typer.Typer) -> None:
    app.command("emulator")(emulator)


def emulator(
    region: str = typer.Option("eu-west-1", "--region", help="The emulated region."),
    workloads: int = typer.Option(1, "--workloads", min=0, help="Primary instances seeded at start, one per workload."),
    seed: int = typer.Option(0, "--seed", help="Seed of the synthetic market, faults and interruptions."),
    prices: Path | None = typer.Option(
        None, "--prices", exists=True, dir_okay=False, help="Spot price trace CSV(.gz); default: a synthetic market."
    ),
    ondemand: Path | None = typer.Option(
        None, "--ondemand", exists=True, dir_okay=False, help="On-demand price CSV; default: built-in list prices."
    ),
    advisor: Path | None = typer.Option(
        None, "--advisor", exists=True, dir_okay=False, help="Spot Advisor JSON: draw interruptions from its risk."
    ),
    interruption_rate: float = typer.Option(
        1.0, "--interruption-rate", help="Multiplier on the Spot Advisor's interruption rate (with --advisor)."
    ),
    speed: float = typer.Option(1.0, "--speed", min=0.001, help="How much faster than real time the world runs."),
    port: int = typer.Option(0, "--port", help="Port of the AWS endpoint (the shim); 0 picks a free one."),
    server: str | None = typer.Option(
        None, "--server", help="Control-plane URL: every running instance gets an agent. Without it: no agents."
    ),
    enrollment_token: str = typer.Option("", "--enrollment-token", help="Token the agents enrol with."),
    run_dir: Path | None = typer.Option(None, "--run-dir", help="Per-instance dirs and logs (default: a temp dir)."),
    boot_s: float = typer.Option(0.0, "--boot-seconds", help="Emulated seconds from running to agent start."),
    agent_command: str | None = typer.Option(
        None,
        "--agent-command",
        help="Command run per instance instead of the agent (shell-split; {imds}, {endpoint}, {instance_id}, "
        "{config}, {server}, {enrollment_token}, {region}, {workdir} are filled in). Enables the runtime.",
    ),
) -> None:
    """Run an emulated AWS region (moto + price/fault shim + metadata services + agents) until Ctrl-C."""
    # Imported here: the region pulls in moto, which would slow every other `spot-optimizer` command.
    from spot_optimizer.emulator.region import EmulatedRegion
    from spot_optimizer.emulator.region_config import EmulatorConfig

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = EmulatorConfig(
        region=region,
        workloads=workloads,
        seed=seed,
        prices=prices,
        ondemand=ondemand,
        advisor=advisor,
        auto_interruptions=advisor is not None,
        interruption_rate_multiplier=interruption_rate,
        speed=speed,
        port=port,
        server_url=server,
        enrollment_token=enrollment_token,
        run_dir=run_dir,
        boot_s=boot_s,
        agent_command=shlex.split(agent_command) if agent_command else None,
    )
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    # SIGINT too, explicitly: a process started with SIGINT ignored (a background job of a shell) would
    # otherwise never see its Ctrl-C / `kill -INT`, and leave moto and the agents running.
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    emulated = EmulatedRegion(config)
    try:
        emulated.start()
        typer.echo(f"AWS endpoint (AWS_ENDPOINT_URL): {emulated.endpoint_url}")
        typer.echo(f"control API:                     {emulated.endpoint_url}/_emulator/")
        typer.echo(f"moto:                            {emulated.moto_url}")
        typer.echo(f"run dir:                         {emulated.run_dir}")
        for iid, inst in emulated.instances().items():
            typer.echo(f"  {iid} {inst.instance_type} {inst.availability_zone} {inst.lifecycle} imds {inst.imds_url}")
        typer.echo("agents: " + ("on" if emulated.runtime else "off (no --server)"))
        typer.echo("Ctrl-C to stop.")
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        typer.echo("stopping the emulated region...")
        emulated.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
