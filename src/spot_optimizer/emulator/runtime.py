"""The instance runtime: one process per running emulated instance, ended when the instance ends.

The command is a template: each argument is formatted with the instance's context
(`{server}`, `{enrollment_token}`, `{config}`, `{imds}`, `{region}`, `{endpoint}`, `{instance_id}`,
`{workdir}`), or a callable returning the argv. Each process runs in its own session (so the whole
tree is signalled), in `<run_dir>/instances/<instance-id>/`, with its output in `agent.log` there.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

logger = logging.getLogger(__name__)

CONFIG_NAME = "spot_optimizer_config.json"

DEFAULT_AGENT_COMMAND: tuple[str, ...] = (
    sys.executable,
    "-m",
    "spot_optimizer.cli",
    "agent",
    "--server",
    "{server}",
    "--enrollment-token",
    "{enrollment_token}",
    "--config",
    "{config}",
    "--imds-endpoint",
    "{imds}",
    "--region",
    "{region}",
)


@dataclass(frozen=True)
class InstanceContext:
    instance_id: str
    region: str
    endpoint: str  # the shim's URL (AWS_ENDPOINT_URL)
    imds: str  # this instance's metadata service URL
    workdir: Path
    server: str = ""
    enrollment_token: str = ""

    @property
    def config(self) -> Path:
        return self.workdir / CONFIG_NAME

    def values(self) -> dict[str, str]:
        return {
            "instance_id": self.instance_id,
            "region": self.region,
            "endpoint": self.endpoint,
            "imds": self.imds,
            "workdir": str(self.workdir),
            "config": str(self.config),
            "server": self.server,
            "enrollment_token": self.enrollment_token,
        }

    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            "AWS_EC2_METADATA_SERVICE_ENDPOINT": self.imds,
            "SPOT_OPTIMIZER_EMULATED_INSTANCE_ID": self.instance_id,
            "PYTHONUNBUFFERED": "1",
        }


CommandTemplate = Sequence[str] | Callable[[InstanceContext], Sequence[str]]


@dataclass
class AgentProcess:
    context: InstanceContext
    argv: list[str]
    popen: subprocess.Popen[bytes]
    log_path: Path
    started_at: float
    log_file: IO[bytes]
    ended_at: float | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def running(self) -> bool:
        return self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()


class InstanceRuntime:
    def __init__(
        self,
        run_dir: Path,
        command: CommandTemplate = DEFAULT_AGENT_COMMAND,
        extra_env: dict[str, str] | None = None,
        stop_grace_s: float = 5.0,
    ) -> None:
        self.run_dir = run_dir
        self.command = command
        self.extra_env = dict(extra_env or {})
        self.stop_grace_s = stop_grace_s
        self._procs: dict[str, AgentProcess] = {}
        self._lock = threading.Lock()

    def workdir(self, instance_id: str) -> Path:
        path = self.run_dir / "instances" / instance_id
        path.mkdir(parents=True, exist_ok=True)
        return path

    def argv(self, ctx: InstanceContext) -> list[str]:
        if callable(self.command):
            return [str(a) for a in self.command(ctx)]
        values = ctx.values()
        return [arg.format(**values) for arg in self.command]

    def start(self, ctx: InstanceContext) -> AgentProcess:
        with self._lock:
            existing = self._procs.get(ctx.instance_id)
            if existing is not None and existing.ended_at is None:
                return existing
            argv = self.argv(ctx)
            log_path = ctx.workdir / "agent.log"
            log_file = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
            env = {**os.environ, **ctx.env(), **self.extra_env}
            popen = subprocess.Popen(
                argv,
                cwd=ctx.workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            proc = AgentProcess(ctx, argv, popen, log_path, time.time(), log_file)
            self._procs[ctx.instance_id] = proc
        logger.info("instance %s: started agent pid %d (log %s)", ctx.instance_id, popen.pid, log_path)
        return proc

    def get(self, instance_id: str) -> AgentProcess | None:
        with self._lock:
            return self._procs.get(instance_id)

    def processes(self) -> dict[str, AgentProcess]:
        with self._lock:
            return dict(self._procs)

    def stop(self, instance_id: str) -> int | None:
        """SIGTERM the instance's process group, SIGKILL after the grace period. Returns the exit code."""
        proc = self.get(instance_id)
        if proc is None or proc.ended_at is not None:
            return None if proc is None else proc.returncode
        _terminate(proc.popen, self.stop_grace_s)
        proc.ended_at = time.time()
        proc.log_file.close()
        logger.info("instance %s: agent pid %d ended with %s", instance_id, proc.pid, proc.popen.returncode)
        return proc.popen.returncode

    def kill(self, instance_id: str, sig: int = signal.SIGKILL) -> bool:
        """Signal the process group (a crash when SIGKILL); the instance keeps running, the agent does not
        come back by itself (see EmulatedRegion.restart_agent)."""
        proc = self.get(instance_id)
        if proc is None or not proc.running:
            return False
        _signal_group(proc.popen, sig)
        if sig == signal.SIGKILL:
            proc.popen.wait(timeout=5)
        return True

    def stop_all(self) -> None:
        procs = [p for p in self.processes().values() if p.ended_at is None]
        for proc in procs:  # signal every group first, then wait: shutdown takes one grace period
            _signal_group(proc.popen, signal.SIGTERM)
        for proc in procs:
            self.stop(proc.context.instance_id)


def _signal_group(popen: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(popen.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _terminate(popen: subprocess.Popen[bytes], grace_s: float) -> None:
    if popen.poll() is None:
        _signal_group(popen, signal.SIGTERM)
        try:
            popen.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
    # the leader may be gone while children of its session live on: make sure the group is gone
    _signal_group(popen, signal.SIGKILL)
    try:
        popen.wait(timeout=5)
    except subprocess.TimeoutExpired:
        logger.warning("process %d did not die after SIGKILL", popen.pid)
