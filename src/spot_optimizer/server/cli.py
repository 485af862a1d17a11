"""`spot-optimizer server`, `spot-optimizer db upgrade` and `spot-optimizer token create`.

Heavy imports (FastAPI, SQLAlchemy, uvicorn) happen inside the commands so `--help` stays fast.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import typer

DEFAULT_DB = "sqlite:///spot_optimizer.db"
LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s [%(process)d:%(threadName)s] %(message)s"


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT, stream=sys.stderr, force=True)


def server(
    db: str = typer.Option(DEFAULT_DB, "--db", envvar="SPOT_OPTIMIZER_DB", help="SQLAlchemy database URL."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8080, "--port", help="Port to listen on."),
    admin_token: str | None = typer.Option(
        None, "--admin-token", envvar="SPOT_OPTIMIZER_ADMIN_TOKEN", help="Pre-seed this admin token."
    ),
    enrollment_token: str | None = typer.Option(
        None,
        "--enrollment-token",
        envvar="SPOT_OPTIMIZER_ENROLLMENT_TOKEN",
        help="Pre-seed this enrollment token (agents register with it).",
    ),
    heartbeat_interval: float = typer.Option(
        5.0, "--heartbeat-interval", min=0.1, help="Seconds between heartbeats."
    ),
    offline_after: int = typer.Option(
        3, "--offline-after", min=1, help="Missed heartbeat intervals until OFFLINE."
    ),
    command_lease: float = typer.Option(30.0, "--command-lease", min=0.1, help="Seconds until redelivery."),
    command_deadline: float = typer.Option(
        600.0, "--command-deadline", min=1, help="Seconds until a command expires."
    ),
    decision_interval: float = typer.Option(
        10.0, "--decision-interval", min=0, help="Seconds between decision loop passes (0 = no loop)."
    ),
    advisor: Path | None = typer.Option(
        None, "--advisor", exists=True, dir_okay=False, help="Spot Advisor JSON feed for interruption risk."
    ),
    prices_refresh: float = typer.Option(
        60.0, "--prices-refresh", min=0, help="Seconds between price collections the loop asks for (0 = never)."
    ),
    inventory_refresh: float = typer.Option(
        30.0, "--inventory-refresh", min=0, help="Seconds between inventory collections (0 = never)."
    ),
    leader_lease: float = typer.Option(
        30.0, "--leader-lease", min=1, help="Seconds a decision loop leader holds its lease unrenewed."
    ),
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning or error."),
    tls_cert: Path | None = typer.Option(
        None, "--tls-cert", exists=True, dir_okay=False, help="PEM certificate."
    ),
    tls_key: Path | None = typer.Option(
        None, "--tls-key", exists=True, dir_okay=False, help="PEM private key."
    ),
) -> None:
    """Run the control plane (agent API, operator API, /docs, /healthz, /metrics). Upgrades the DB first."""
    import uvicorn

    from spot_optimizer.server.app import create_app
    from spot_optimizer.server.settings import ServerSettings

    if (tls_cert is None) != (tls_key is None):
        raise typer.BadParameter("--tls-cert and --tls-key go together")
    _setup_logging(log_level)
    settings = ServerSettings(
        db_url=db,
        admin_token=admin_token,
        enrollment_token=enrollment_token,
        heartbeat_interval_s=heartbeat_interval,
        offline_after_missed=offline_after,
        command_lease_s=command_lease,
        command_deadline_s=command_deadline,
        decision_interval_s=decision_interval,
        advisor_path=str(advisor) if advisor else None,
        prices_refresh_s=prices_refresh,
        inventory_refresh_s=inventory_refresh,
        leader_lease_s=leader_lease,
    )
    app = create_app(settings)
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=log_level.lower(),
        log_config=None,
        ssl_certfile=str(tls_cert) if tls_cert else None,
        ssl_keyfile=str(tls_key) if tls_key else None,
    )


def db_upgrade(
    db: str = typer.Option(DEFAULT_DB, "--db", envvar="SPOT_OPTIMIZER_DB", help="SQLAlchemy database URL."),
) -> None:
    """Create or upgrade the database schema to the newest version."""
    from spot_optimizer.server.db import upgrade

    _setup_logging("warning")
    upgrade(db)
    typer.echo("database schema is up to date", err=True)


def token_create(
    kind: str = typer.Option(
        ..., "--kind", help="enrollment (agents register with it) or admin (operators)."
    ),
    db: str | None = typer.Option(
        None, "--db", help="Write the token straight into this database (offline)."
    ),
    server_url: str | None = typer.Option(None, "--server", help="Ask this running server (needs --token)."),
    token: str | None = typer.Option(
        None, "--token", envvar="SPOT_OPTIMIZER_TOKEN", help="Admin token for --server."
    ),
    note: str | None = typer.Option(None, "--note", help="What the token is for."),
) -> None:
    """Create a token and print it once (only its hash is stored)."""
    if kind not in ("enrollment", "admin"):
        raise typer.BadParameter(f"--kind must be enrollment or admin, not {kind!r}")
    if server_url and not db:
        plain = _token_over_http(server_url, token, kind, note)
    else:
        plain = _token_in_db(db or DEFAULT_DB, kind, note)
    typer.echo(f"{kind} token created; it is shown only this once:", err=True)
    typer.echo(plain)


def _token_in_db(db_url: str, kind: str, note: str | None) -> str:
    from spot_optimizer.server.db import make_engine, make_session_factory, upgrade
    from spot_optimizer.server.services.tokens import TokenKind, create_token
    from spot_optimizer.server.settings import utcnow

    _setup_logging("warning")
    engine = make_engine(db_url)
    try:
        upgrade(db_url, engine)
        with make_session_factory(engine)() as session:
            return create_token(session, TokenKind(kind), utcnow(), note=note)
    finally:
        engine.dispose()


def _token_over_http(server_url: str, token: str | None, kind: str, note: str | None) -> str:
    import httpx

    if not token:
        typer.echo("error: --server needs an admin --token (or SPOT_OPTIMIZER_TOKEN)", err=True)
        raise typer.Exit(2)
    try:
        response = httpx.post(
            server_url.rstrip("/") + "/api/v1/tokens",
            json={"kind": kind, "note": note},
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
    except httpx.HTTPError as exc:
        typer.echo(f"error: cannot reach server {server_url}: {exc}", err=True)
        raise typer.Exit(2) from exc
    if response.status_code >= 400:
        typer.echo(f"error: server answered HTTP {response.status_code}: {response.text}", err=True)
        raise typer.Exit(1)
    return str(response.json()["token"])


def token_revoke(
    token_id: int = typer.Argument(..., help="Id of the token (printed by `token create`)."),
    db: str | None = typer.Option(None, "--db", help="Revoke straight in this database (offline)."),
    server_url: str | None = typer.Option(None, "--server", help="Ask this running server (needs --token)."),
    token: str | None = typer.Option(
        None, "--token", envvar="SPOT_OPTIMIZER_TOKEN", help="Admin token for --server."
    ),
) -> None:
    """Revoke a token: it stops working at once, on every server process."""
    if server_url and not db:
        import httpx

        if not token:
            typer.echo("error: --server needs an admin --token (or SPOT_OPTIMIZER_TOKEN)", err=True)
            raise typer.Exit(2)
        try:
            response = httpx.delete(
                f"{server_url.rstrip('/')}/api/v1/tokens/{token_id}",
                headers={"Authorization": f"Bearer {token}"},
                timeout=30,
            )
        except httpx.HTTPError as exc:
            typer.echo(f"error: cannot reach server {server_url}: {exc}", err=True)
            raise typer.Exit(2) from exc
        if response.status_code >= 400:
            typer.echo(f"error: server answered HTTP {response.status_code}: {response.text}", err=True)
            raise typer.Exit(1)
    else:
        from spot_optimizer.server.db import make_engine, make_session_factory, upgrade
        from spot_optimizer.server.services.tokens import revoke_token
        from spot_optimizer.server.settings import utcnow

        _setup_logging("warning")
        db_url = db or DEFAULT_DB
        engine = make_engine(db_url)
        try:
            upgrade(db_url, engine)
            with make_session_factory(engine)() as session:
                if not revoke_token(session, token_id, utcnow()):
                    typer.echo(f"error: unknown token id {token_id}", err=True)
                    raise typer.Exit(1)
        finally:
            engine.dispose()
    typer.echo(f"token {token_id} revoked", err=True)


def register(app: typer.Typer) -> None:
    app.command("server")(server)
    db_app = typer.Typer(help="Control plane database.", no_args_is_help=True)
    db_app.command("upgrade")(db_upgrade)
    app.add_typer(db_app, name="db")
    token_app = typer.Typer(help="Admin and enrollment tokens.", no_args_is_help=True)
    token_app.command("create")(token_create)
    token_app.command("revoke")(token_revoke)
    app.add_typer(token_app, name="token")
