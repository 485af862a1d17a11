"""`spot-optimizer emulator` runs until interrupted and then leaves no process behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie child of ours would still answer; our children are reaped by the emulator itself
    return True


def _wait_for(path: Path, proc: subprocess.Popen[str], timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"emulator exited early with {proc.returncode}: {proc.stdout.read() if proc.stdout else ''}")
        if path.exists() and path.read_text():
            return json.loads(path.read_text())
        time.sleep(0.1)
    pytest.fail(f"{path} not written within {timeout_s} s")


def test_emulator_command_stops_everything_on_ctrl_c(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "spot_optimizer.cli",
            "emulator",
            "--workloads",
            "2",
            "--speed",
            "60",
            "--run-dir",
            str(run_dir),
            "--agent-command",
            f"{sys.executable} -c 'import time; time.sleep(600)' {{instance_id}}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        info = _wait_for(run_dir / "emulator.json", proc, 60)
        deadline = time.monotonic() + 30
        while True:
            with urllib.request.urlopen(info["endpoint_url"] + "/_emulator/instances", timeout=5) as resp:
                instances = json.loads(resp.read())["instances"]
            pids = [i["agent"]["pid"] for i in instances if i["agent"]]
            if len(pids) == 2 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert len(pids) == 2 and all(_alive(pid) for pid in pids)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    assert "AWS endpoint" in out
    assert not any(_alive(pid) for pid in pids)
    for url in (info["endpoint_url"], info["moto_url"]):
        with pytest.raises(OSError):
            urllib.request.urlopen(url + "/", timeout=2)
