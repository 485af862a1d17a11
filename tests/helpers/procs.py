"""Real processes for integration tests: the server, the agent, moto in server mode, waiting helpers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from spot_optimizer.demo.stack import free_port, wait_for  # noqa: F401 - re-exported for the tests

CLI = [sys.executable, "-m", "spot_optimizer.cli"]
ADMIN = "integration-admin-token"
ENROLL = "integration-enrollment-token"


@dataclass
class Proc:
    args: list[str]
    log: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def start(self) -> Proc:
        out = self.log.open("ab")
        self.process = subprocess.Popen(self.args, stdout=out, stderr=subprocess.STDOUT, env=self.env,
                                        start_new_session=True)
        out.close()
        return self

    def kill9(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self, timeout_s: float = 15) -> int | None:
        if not self.process:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        return self.process.returncode

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def server_proc(db_url: str, port: int, log: Path, *extra: str) -> Proc:
    env = {**os.environ, "SPOT_OPTIMIZER_ADMIN_TOKEN": ADMIN, "SPOT_OPTIMIZER_ENROLLMENT_TOKEN": ENROLL}
    args = [*CLI, "server", "--db", db_url, "--port", str(port), "--log-level", "info", *extra]
    return Proc(args, log, env)


def agent_proc(server_url: str, imds_url: str, aws_url: str, config: Path, log: Path, *extra: str) -> Proc:
    env = {**os.environ, "AWS_ENDPOINT_URL": aws_url, "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "eu-west-1"}
    env.pop("AWS_PROFILE", None)
    args = [*CLI, "agent", "--server", server_url, "--enrollment-token", ENROLL, "--config", str(config),
            "--imds-endpoint", imds_url, "--log-file", str(log.with_suffix(".file.log")), *extra]
    return Proc(args, log, env)


class Operator:
    """The operator API, as a script would use it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = httpx.Client(base_url=url + "/api/v1", headers={"Authorization": f"Bearer {ADMIN}"},
                                 timeout=10)

    def get(self, path: str, **params: Any) -> Any:
        response = self.http.get(path, params=params)
        response.raise_for_status()
        return response.json()

    def command(self, agent_id: str, type_: str, **params: Any) -> dict[str, Any]:
        response = self.http.post("/commands", json={"agent_id": agent_id, "type": type_, "params": params})
        assert response.status_code == 201, response.text
        return dict(response.json())

    def healthy(self) -> bool:
        try:
            return httpx.get(self.url + "/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False
