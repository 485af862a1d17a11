"""`spot-optimizer agent`: the daemon that runs on every managed instance."""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path
from types import FrameType

import typer

from spot_optimizer.core.errors import SpotOptimizerError

logger = logging.getLogger(__name__)


def _read_token(token: str | None, token_file: Path | None) -> str | None:
    if token:
        return token
    if token_file:
        try:
            return token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise typer.BadParameter(f"cannot read enrollment token file {token_file}: {exc}") from exc
    return None


def agent(
    server: str = typer.Option(..., "--server", envvar="SPOT_OPTIMIZER_SERVER", help="Control plane URL."),
    enrollment_token: str | None = typer.Option(
        None, "--enrollment-token", envvar="SPOT_OPTIMIZER_ENROLLMENT_TOKEN",
        help="Token to register with (first start only). Or use --enrollment-token-file.", show_default=False),
    enrollment_token_file: Path | None = typer.Option(
        None, "--enrollment-token-file", help="File holding the enrollment token."),
    config: Path = typer.Option(Path("./spot_optimizer_config.json"), "--config",
                                help="Persistent config file (created 0600)."),
    imds_endpoint: str | None = typer.Option(
        None, "--imds-endpoint", help="Metadata service URL (default: $AWS_EC2_METADATA_SERVICE_ENDPOINT or "
        "http://169.254.169.254)."),
    region: str | None = typer.Option(None, "--region", help="AWS region (default: the instance's own)."),
    workload: str | None = typer.Option(None, "--workload", help="Workload name (default: the instance's "
                                        "SpotOptimizer:Workload tag, else its id)."),
    aws_endpoint_url: str | None = typer.Option(None, "--aws-endpoint-url", envvar="AWS_ENDPOINT_URL",
                                                help="Override the AWS endpoint (emulated region, moto)."),
    notice_poll_interval: float = typer.Option(2.0, "--notice-poll-interval", min=0.05,
                                               help="Seconds between metadata polls for notices."),
    heartbeat_interval: float = typer.Option(5.0, "--heartbeat-interval", min=0.05,
                                             help="Seconds between heartbeats until the server says otherwise."),
    autonomy_grace: float = typer.Option(
        20.0, "--autonomy-grace", min=0,
        help="Seconds the server must stay unreachable during an interruption notice before the agent acts alone."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Log every action instead of calling AWS for it."),
    ca_bundle: str | None = typer.Option(None, "--ca-bundle", help="CA bundle to verify the server's TLS."),
    log_level: str = typer.Option("DEBUG", "--log-level", help="DEBUG (default, as the seed asks), INFO, ..."),
    log_file: Path = typer.Option(Path("spot_optimizer_agent.log"), "--log-file", help="Log file."),
    log_json: bool = typer.Option(False, "--log-json", help="One JSON object per log line."),
    crash_at: str | None = typer.Option(None, "--crash-at", hidden=True, help="Test hook: SIGKILL self there."),
) -> None:
    """Run the instance agent: watch for notices, heartbeat, execute the control plane's commands."""
    from spot_optimizer.agent.daemon import Agent, AgentSettings
    from spot_optimizer.agent.logsetup import setup_logging

    setup_logging(log_level, log_file, json_format=log_json)
    settings = AgentSettings(
        server_url=server, enrollment_token=_read_token(enrollment_token, enrollment_token_file),
        config_path=config, imds_endpoint=imds_endpoint, region=region, workload=workload,
        aws_endpoint_url=aws_endpoint_url, notice_poll_s=notice_poll_interval, heartbeat_s=heartbeat_interval,
        dry_run=dry_run, crash_at=crash_at, ca_bundle=ca_bundle, autonomy_grace_s=autonomy_grace,
    )
    try:
        instance = Agent(settings)

        def _stop(signum: int, _frame: FrameType | None) -> None:
            logger.warning("Signal %s received: finishing the current step and shutting down",
                           signal.Signals(signum).name)
            instance.stop_event.set()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        code = instance.run()
    except SpotOptimizerError as exc:
        logger.critical("Agent cannot run: %s", exc, exc_info=True)
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    sys.exit(code)


def register(app: typer.Typer) -> None:
    app.command("agent")(agent)
