"""A local stack: a real `spot-optimizer server` process plus the emulated region, whose every running
instance gets a real `spot-optimizer agent` process. Used by the demo, the end-to-end tests and the
benchmarks, so all three exercise exactly the same processes."""

from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx

logger = logging.getLogger(__name__)
T = TypeVar("T")
CLI = (sys.executable, "-m", "spot_optimizer.cli")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, probe: Callable[[], T | None], timeout_s: float = 30.0, every_s: float = 0.1) -> T:
    """Poll `probe` until it returns something truthy; raise TimeoutError naming `what` otherwise."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except (httpx.HTTPError, OSError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(every_s)
    raise TimeoutError(f"timed out after {timeout_s}s waiting for {what} (last: {last!r})")


class OperatorClient:
    """The operator API as a script uses it."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.http = httpx.Client(base_url=url + "/api/v1", headers={"Authorization": f"Bearer {token}"},
                                 timeout=10, trust_env=False)

    def get(self, path: str, **params: Any) -> Any:
        response = self.http.get(path, params={k: v for k, v in params.items() if v is not None})
        response.raise_for_status()
        return response.json()

    def command(self, agent_id: str, type_: str, **params: Any) -> dict[str, Any]:
        response = self.http.post("/commands", json={"agent_id": agent_id, "type": type_, "params": params})
        if response.status_code != 201:
            raise RuntimeError(f"command {type_} refused: HTTP {response.status_code} {response.text}")
        return dict(response.json())

    def toggles(self, agent_id: str, **toggles: bool) -> dict[str, Any]:
        response = self.http.patch(f"/agents/{agent_id}/toggles", json=toggles)
        response.raise_for_status()
        return dict(response.json())

    def healthy(self) -> bool:
        try:
            return httpx.get(self.url + "/healthz", timeout=2, trust_env=False).status_code == 200
        except httpx.HTTPError:
            return False

    def close(self) -> None:
        self.http.close()


class ServerProcess:
    def __init__(self, db_url: str, port: int, log: Path, admin_token: str, enrollment_token: str,
                 flags: tuple[str, ...] = ()) -> None:
        self.db_url, self.port, self.log, self.flags = db_url, port, log, flags
        self.env = {**os.environ, "SPOT_OPTIMIZER_ADMIN_TOKEN": admin_token,
                    "SPOT_OPTIMIZER_ENROLLMENT_TOKEN": enrollment_token}
        self.popen: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerProcess:
        args = [*CLI, "server", "--db", self.db_url, "--port", str(self.port), "--log-level", "info", *self.flags]
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=self.env,
                                          start_new_session=True)
        return self

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill9(self) -> None:
        if self.alive():
            assert self.popen is not None
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=10)

    def stop(self, grace_s: float = 10.0) -> None:
        if not self.alive():
            return
        assert self.popen is not None
        os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=10)


class LocalStack:
    """Server + emulated region + agents. `start()`, use `.op` and `.region`, `stop()` (also on error)."""

    def __init__(
        self,
        run_dir: Path,
        *,
        db_url: str | None = None,
        server_flags: tuple[str, ...] = (),
        agent_args: tuple[str, ...] = (),
        admin_token: str | None = None,
        enrollment_token: str | None = None,
        **region_kw: Any,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.db_url = db_url or f"sqlite:///{self.run_dir / 'server.db'}"
        self.admin_token = admin_token or secrets.token_urlsafe(24)
        self.enrollment_token = enrollment_token or secrets.token_urlsafe(24)
        self.server_flags = server_flags
        self.agent_args = agent_args
        self.region_kw = region_kw
        self.server = ServerProcess(self.db_url, free_port(), self.run_dir / "server.log", self.admin_token,
                                    self.enrollment_token, server_flags)
        self.op = OperatorClient(self.server.url, self.admin_token)
        self.region: Any = None

    def start(self, timeout_s: float = 60.0) -> LocalStack:
        from spot_optimizer.emulator.region import EmulatedRegion
        from spot_optimizer.emulator.runtime import DEFAULT_AGENT_COMMAND

        self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.server.start()
            wait_for("server healthy", self.op.healthy, timeout_s=timeout_s)
            command = (*DEFAULT_AGENT_COMMAND, "--log-file", "{workdir}/agent.file.log", *self.agent_args)
            kw: dict[str, Any] = {"run_dir": self.run_dir / "region", "agent_command": command}
            kw.update(self.region_kw)
            self.region = EmulatedRegion(server_url=self.server.url, enrollment_token=self.enrollment_token,
                                         **kw).start()
        except BaseException:
            self.stop()
            raise
        return self

    def restart_server(self, timeout_s: float = 60.0) -> None:
        self.server.start()
        wait_for("server healthy again", self.op.healthy, timeout_s=timeout_s)

    def stop(self) -> None:
        if self.region is not None:
            self.region.stop()
        self.server.stop()
        self.op.close()

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- helpers for scripts and tests ----------------------------------------------------------
    def agents(self) -> list[dict[str, Any]]:
        return list(self.op.get("/agents"))

    def agent_for(self, instance_id: str, online: bool = True) -> dict[str, Any] | None:
        for row in self.agents():
            if row["instance_id"] == instance_id and (not online or row["state"] not in ("OFFLINE", "TERMINATED")):
                return row
        return None

    def wait_agent(self, instance_id: str, timeout_s: float = 60.0) -> dict[str, Any]:
        return wait_for(f"agent of {instance_id} online",
                        lambda: (a := self.agent_for(instance_id)) and a["state"] == "ONLINE_READY" and a,
                        timeout_s=timeout_s)

    def wait_command(self, command_id: str, timeout_s: float = 60.0) -> dict[str, Any]:
        return wait_for(f"command {command_id} finished",
                        lambda: (c := self.op.get(f"/commands/{command_id}"))["status"] in
                        ("succeeded", "failed", "expired") and c, timeout_s=timeout_s)

    def describe(self, instance_id: str) -> dict[str, Any]:
        ec2 = self.region.moto_client("ec2")
        return dict(ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0])

    def tags(self, instance_id: str) -> dict[str, str]:
        return {t["Key"]: t["Value"] for t in self.describe(instance_id).get("Tags", [])}

    def agent_log(self, instance_id: str) -> str:
        path = self.run_dir / "region" / "instances" / instance_id / "agent.file.log"
        return path.read_text(errors="replace") if path.exists() else ""
