"""Server fixtures: every server test runs on SQLite and on PostgreSQL through the `db_url` fixture."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

PG_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_URL_TEMPLATE = "postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
ADMIN_TOKEN = "test-admin-token"
ENROLLMENT_TOKEN = "test-enrollment-token"
START = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


class FakeClock:
    """Injected into ServerSettings.clock: tests move time forward instead of sleeping."""

    def __init__(self, start: datetime = START) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


def _pg_connect(dsn: str) -> Any:
    import psycopg

    return psycopg.connect(dsn, autocommit=True, connect_timeout=3)


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A uniquely named PostgreSQL database for this test session, migrated once, dropped at the end."""
    try:
        admin = _pg_connect(PG_ADMIN_DSN)
    except Exception as exc:  # psycopg.OperationalError and friends
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 is unreachable ({exc}); PostgreSQL params skipped")
    name = f"spot_test_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    url = PG_URL_TEMPLATE.format(name=name)
    try:
        from spot_optimizer.server.db import upgrade

        upgrade(url)
        yield url
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def _truncate_all(url: str) -> None:
    from sqlalchemy import text

    from spot_optimizer.server.db import make_engine
    from spot_optimizer.server.models import Base

    engine = make_engine(url)
    try:
        names = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
        with engine.begin() as conn:
            conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """THE database fixture: a fresh, empty database of each kind for every server test."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'server.db'}"
    url: str = request.getfixturevalue("pg_database")
    _truncate_all(url)
    return url


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def server_settings(db_url: str, clock: FakeClock) -> Any:
    from spot_optimizer.server.settings import ServerSettings

    return ServerSettings(
        db_url=db_url,
        admin_token=ADMIN_TOKEN,
        enrollment_token=ENROLLMENT_TOKEN,
        heartbeat_interval_s=5.0,
        offline_after_missed=3,
        command_lease_s=30.0,
        command_deadline_s=600.0,
        sweep_interval_s=0,  # tests run the sweep themselves with the fake clock
        clock=clock,
    )


@pytest.fixture
def server_app(server_settings: Any) -> FastAPI:
    from spot_optimizer.server.app import create_app

    return create_app(server_settings)


@pytest.fixture
def client(server_app: FastAPI) -> Iterator[TestClient]:
    with TestClient(server_app) as test_client:
        yield test_client


@pytest.fixture
def admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@dataclass
class AgentHandle:
    agent_id: str
    secret: str
    instance_id: str
    workload: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secret}"}

    def url(self, what: str) -> str:
        return f"/api/v1/agent/{self.agent_id}/{what}"


def metadata(instance_id: str, az: str = "us-east-1a", instance_type: str = "m5.large") -> dict[str, Any]:
    return {
        "instance_id": instance_id,
        "instance_type": instance_type,
        "availability_zone": az,
        "region": "us-east-1",
        "ami_id": "ami-12345678",
        "lifecycle": "spot",
    }


def register_body(instance_id: str, workload: str | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "enrollment_token": ENROLLMENT_TOKEN,
        "metadata": metadata(instance_id),
        "version": "0.1.0",
        **extra,
    }
    if workload:
        body["workload"] = workload
    return body


@pytest.fixture
def make_agent(client: TestClient) -> Callable[..., AgentHandle]:
    def _make(instance_id: str = "i-0000000000000001", workload: str | None = None, **extra: Any) -> AgentHandle:
        response = client.post("/api/v1/agent/register", json=register_body(instance_id, workload, **extra))
        assert response.status_code == 200, response.text
        body = response.json()
        return AgentHandle(body["agent_id"], body["agent_secret"], instance_id, body["workload"])

    return _make


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


SPOT_OPTIMIZER = [sys.executable, "-m", "spot_optimizer.cli"]


@dataclass
class LiveServer:
    url: str
    process: subprocess.Popen[bytes]
    log: Path


@pytest.fixture
def live_server(db_url: str, tmp_path: Path) -> Iterator[LiveServer]:
    """A real `spot-optimizer server` process on a free port (tokens from the environment)."""
    port = free_port()
    log = tmp_path / "server.log"
    env = {
        **os.environ,
        "SPOT_OPTIMIZER_ADMIN_TOKEN": ADMIN_TOKEN,
        "SPOT_OPTIMIZER_ENROLLMENT_TOKEN": ENROLLMENT_TOKEN,
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*SPOT_OPTIMIZER, "server", "--db", db_url, "--port", str(port), "--log-level", "warning"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, process, log)
        yield LiveServer(url, process, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _wait_healthy(url: str, process: subprocess.Popen[bytes], log: Path, timeout_s: float = 30) -> None:
    # Waiting for a process to start listening, not for logic: polling is the only way to know.
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"server did not become healthy within {timeout_s} s:\n{log.read_text()}")


@pytest.fixture
def reg_body() -> Callable[..., dict[str, Any]]:
    """`reg_body(instance_id, workload=None, **extra)`: a valid RegisterRequest body."""
    return register_body


@pytest.fixture
def cli_env(live_server: LiveServer) -> dict[str, str]:
    """Environment for running the operator CLI against `live_server`."""
    return {**os.environ, "SPOT_OPTIMIZER_SERVER": live_server.url, "SPOT_OPTIMIZER_TOKEN": ADMIN_TOKEN}


@dataclass
class CliOutcome:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def run_cli() -> Callable[..., CliOutcome]:
    """Run `spot-optimizer ARGS` in-process (the server it talks to is a real process)."""
    from typer.testing import CliRunner

    from spot_optimizer.cli import app

    def _run(*args: str, env: dict[str, str] | None = None) -> CliOutcome:
        environment = dict(env if env is not None else os.environ)
        # CliRunner only overrides variables: clear the ones the test did not set.
        for name in ("SPOT_OPTIMIZER_SERVER", "SPOT_OPTIMIZER_TOKEN", "COLUMNS"):
            environment.setdefault(name, None)  # type: ignore[arg-type]
        result = CliRunner().invoke(app, list(args), env=environment, catch_exceptions=False)
        return CliOutcome(result.exit_code, result.stdout, result.stderr)

    return _run
