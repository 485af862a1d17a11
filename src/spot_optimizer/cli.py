"""The one `spot-optimizer` command. Wiring only: each subcommand lives with the package it drives."""

from __future__ import annotations

import importlib

import typer

from spot_optimizer import __version__

app = typer.Typer(
    name="spot-optimizer",
    help=(
        "Run EC2 workloads on spot instances (60-90 % cheaper than on-demand) and keep them available "
        "through spot interruptions. Run `spot-optimizer COMMAND --help` for each command."
    ),
    no_args_is_help=True,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"spot-optimizer {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Spot Optimizer."""


# (module, attribute): each module exposes `register(app)` and is imported lazily only if present,
# so that a missing optional part never breaks `--help`.
_SUBCOMMAND_MODULES = (
    "spot_optimizer.agent.cli",
    "spot_optimizer.server.cli",
    "spot_optimizer.opscli",
    "spot_optimizer.backtest.cli",
    "spot_optimizer.emulator.cli",
    "spot_optimizer.demo.cli",
)

for _name in _SUBCOMMAND_MODULES:
    try:
        _module = importlib.import_module(_name)
    except ModuleNotFoundError as exc:  # only tolerate the module itself being absent
        if exc.name != _name:
            raise
        continue
    _module.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
