"""`spot-optimizer backtest`: replay real spot price history through every strategy."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn


def _time(value: str | None, flag: str) -> datetime | None:
    from spot_optimizer.backtest.data import BacktestInputError, parse_time

    if value is None:
        return None
    try:
        return parse_time(value)
    except ValueError as exc:
        raise BacktestInputError(f"{flag}: {value!r} is not an ISO 8601 time") from exc


def backtest_command(
    prices: Path = typer.Option(..., "--prices", help="Spot price history CSV (.csv or .csv.gz)."),
    ondemand: Path = typer.Option(..., "--ondemand", help="On-demand price CSV (region,instance_type,"
                                  "ondemand_usd_per_hour)."),
    advisor: Path = typer.Option(..., "--advisor", help="Spot Advisor JSON feed."),
    region: str = typer.Option(..., "--region", help="Region, e.g. eu-west-1."),
    types: str = typer.Option(..., "--types", help="Comma-separated instance types, e.g. m5.large,m5a.large."),
    start: str | None = typer.Option(None, "--start", help="Window start, ISO 8601 (default: first record)."),
    end: str | None = typer.Option(None, "--end", help="Window end, ISO 8601 (default: last record)."),
    instances: int = typer.Option(10, "--instances", min=1, help="Number of workloads."),
    seed: int = typer.Option(0, "--seed", help="Seed of the interruption draws."),
    boot_time: float = typer.Option(180.0, "--boot-time", min=0, help="Seconds from launch to ready."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
    plot_file: Path | None = typer.Option(None, "--plot", help="Write cost over time per strategy (PNG)."),
) -> None:
    """Replay spot price history hour by hour through on_demand, stay_put, greedy, capacity_optimized,
    spot_optimizer (the live decision engine) and the hindsight oracle, with the same interruptions."""
    # numpy and matplotlib are imported here so that every other command (the agent above all) starts
    # without them.
    from spot_optimizer.backtest.data import BacktestInputError
    from spot_optimizer.backtest.report import plot, table
    from spot_optimizer.backtest.run import STRATEGIES, BacktestRequest, backtest
    from spot_optimizer.backtest.scenario import SimConfig

    err = Console(stderr=True, soft_wrap=True)
    try:
        request = BacktestRequest(
            prices=prices, ondemand=ondemand, advisor=advisor, region=region,
            types=tuple(t.strip() for t in types.split(",") if t.strip()),
            start=_time(start, "--start"), end=_time(end, "--end"),
            config=SimConfig(instances=instances, seed=seed, boot_time_s=boot_time),
        )
        with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=err,
                      transient=True, disable=as_json or not err.is_terminal) as bar:
            tasks = {name: bar.add_task(name, total=1.0) for name in STRATEGIES}
            summary, _, results = backtest(request, lambda name, f: bar.update(tasks[name], completed=f))
    except BacktestInputError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from exc
    if plot_file is not None:
        plot(results, plot_file, f"{region}: cumulative cost, {instances} workloads")
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    else:
        out = Console()
        if not out.is_terminal:
            out = Console(width=120)
        out.print(table(summary))
        if plot_file is not None:
            out.print(f"plot written to {plot_file}")


def register(app: typer.Typer) -> None:
    app.command("backtest")(backtest_command)
