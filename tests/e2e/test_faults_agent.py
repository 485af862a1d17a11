"""Agent-side faults on the emulated region, with the agent process killed for real.

- `kill -9` at every step of a launch (the four crash points of the executor): after a restart, exactly one
  instance exists for the command and the command's result names it.
- The metadata service flapping (5xx, lost tokens) gives no false notice and loses no notice.
- The same notice served again and again, notices out of order, a notice replayed for an instance already gone.
- A read-only config directory: the agent stops with a clear error and the old config stays intact.

One stack for the module; the decision loop is off so that only the test issues commands, and instances the
tests launch get a stand-in process instead of a real agent (only the seeded primary's agent matters here).
"""

from __future__ import annotations

import json
import os
import stat
import sys
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from e2e.conftest import FAST_AGENT, FAST_SERVER, make_stack
from spot_optimizer.agent.executor import CRASH_POINTS
from spot_optimizer.core.models import REQUEST_ID_TAG
from spot_optimizer.demo.stack import LocalStack, wait_for
from spot_optimizer.emulator.runtime import DEFAULT_AGENT_COMMAND, InstanceContext

pytestmark = pytest.mark.e2e

STAND_IN = (sys.executable, "-c", "import time; time.sleep(3600)")
ROOT_WITHOUT_CAPS = ("setpriv", "--bounding-set=-all", "--inh-caps=-all")


class AgentCommands:
    """The instance runtime's command: a real agent for the first `real` instances (the seeded primaries),
    a sleeping stand-in for the others; per-instance extra arguments (e.g. `--crash-at`)."""

    def __init__(self, real: int = 1, agent_args: Sequence[str] = FAST_AGENT) -> None:
        self.real_limit = real
        self.real: set[str] = set()
        self.agent_args = tuple(agent_args)
        self.extra: dict[str, tuple[str, ...]] = {}
        self.prefix: dict[str, tuple[str, ...]] = {}

    def __call__(self, ctx: InstanceContext) -> list[str]:
        if ctx.instance_id not in self.real:
            if len(self.real) >= self.real_limit:
                return list(STAND_IN)
            self.real.add(ctx.instance_id)
        template = (*DEFAULT_AGENT_COMMAND, "--log-file", "{workdir}/agent.file.log", *self.agent_args)
        argv = [a.format(**ctx.values()) for a in template] + list(self.extra.get(ctx.instance_id, ()))
        return [*self.prefix.get(ctx.instance_id, ()), *argv]


@pytest.fixture(scope="module")
def cmds() -> AgentCommands:
    return AgentCommands()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, cmds: AgentCommands) -> Iterator[LocalStack]:
    flags = (*FAST_SERVER, "--decision-interval", "0")
    with make_stack(tmp_path_factory.mktemp("faults-agent"), server_flags=flags, agent_command=cmds) as s:
        yield s


def primary(stack: LocalStack) -> str:
    return str(next(iter(stack.region.seed.primaries.values())))


def workdir(stack: LocalStack, instance_id: str) -> Path:
    return Path(stack.region.run_dir) / "instances" / instance_id


def agent_secret(stack: LocalStack, instance_id: str) -> tuple[str, str]:
    config = json.loads((workdir(stack, instance_id) / "spot_optimizer_config.json").read_text())
    return config["agent_id"], config["agent_secret"]


def instances_with_request_id(stack: LocalStack, request_id: str) -> list[str]:
    ec2 = stack.region.moto_client("ec2")
    found = ec2.describe_instances(Filters=[{"Name": f"tag:{REQUEST_ID_TAG}", "Values": [request_id]}])
    return [i["InstanceId"] for r in found["Reservations"] for i in r["Instances"]]


def other_az(stack: LocalStack) -> str:
    own = stack.describe(primary(stack))["Placement"]["AvailabilityZone"]
    return next(az for az in sorted(stack.region.seed.subnets) if az != own)


# --- kill -9 at every step of a launch -----------------------------------------------------------------


@pytest.mark.reliability(fault="agent kill -9 at each step of a launch ({point})",
                         outcome="after restart exactly one instance; the command succeeds naming it")
@pytest.mark.parametrize("point", CRASH_POINTS)
def test_agent_killed_at_every_launch_step_launches_exactly_once(
    stack: LocalStack, cmds: AgentCommands, point: str
) -> None:
    pid = primary(stack)
    agent = stack.wait_agent(pid)
    cmds.extra[pid] = ("--crash-at", point)
    stack.region.restart_agent(pid)
    crashing = stack.region.runtime.get(pid)
    cmd = stack.op.command(agent["agent_id"], "launch", instance_type="m5.large", az=other_az(stack), market="spot")
    wait_for(f"the agent to kill itself at {point}", lambda: crashing.popen.poll() is not None, timeout_s=60)
    assert crashing.popen.returncode == -9
    assert f"CRASH POINT {point} reached" in stack.agent_log(pid)
    assert stack.op.get(f"/commands/{cmd['command_id']}")["status"] in ("pending", "delivered")

    cmds.extra.pop(pid)
    stack.region.restart_agent(pid)
    done = stack.wait_command(cmd["command_id"], timeout_s=60)

    assert done["status"] == "succeeded", done
    launched = instances_with_request_id(stack, cmd["command_id"])
    assert len(launched) == 1, launched
    assert done["result"]["instance_id"] == launched[0]
    run_calls = [c for c in stack.region.calls.list(action="RunInstances")
                 if c.params.get("ClientToken") == cmd["command_id"][:64] and c.status < 300]
    assert len(run_calls) == 1, [c.to_dict() for c in run_calls]
    # the journal holds the finished result, so a redelivery would not run it again
    journal = (workdir(stack, pid) / "spot_optimizer_config.state" / "journal.jsonl").read_text()
    assert cmd["command_id"] in journal


# --- metadata service flapping ---------------------------------------------------------------------------


def notices_for(stack: LocalStack, instance_id: str) -> list[dict[str, Any]]:
    return [n for n in stack.op.get("/notices") if n["instance_id"] == instance_id]


def polls_through(stack: LocalStack, instance_id: str, requests: int) -> None:
    """Wait until the agent made `requests` more metadata requests (it polls on its own schedule)."""
    md = stack.region.metadata(instance_id)
    start = md.requests
    wait_for(f"{requests} metadata requests", lambda: md.requests >= start + requests, timeout_s=60)


@pytest.mark.reliability(fault="metadata service flapping (5xx, 401 after token expiry) with no notice",
                         outcome="no false notice; the agent keeps polling")
def test_metadata_flapping_gives_no_false_notice(stack: LocalStack) -> None:
    pid = primary(stack)
    stack.wait_agent(pid)
    md = stack.region.metadata(pid)
    for status in (500, 503, 404, 500):
        md.fail_next(3, status)
        md.expire_tokens()
        polls_through(stack, pid, 8)
    assert notices_for(stack, pid) == []
    assert "NOTICE DETECTED" not in stack.agent_log(pid)
    assert stack.wait_agent(pid)["state"] == "ONLINE_READY"


@pytest.mark.reliability(fault="metadata service flapping while an interruption notice is up; the same notice "
                               "served on every poll",
                         outcome="the notice reaches the server exactly once")
def test_metadata_flapping_does_not_lose_or_repeat_a_notice(stack: LocalStack) -> None:
    pid = primary(stack)
    stack.wait_agent(pid)
    md = stack.region.metadata(pid)
    md.fail_next(4, 500)
    md.expire_tokens()
    md.set_interruption(datetime.now(UTC) + timedelta(hours=2))
    md.fail_next(3, 503)
    found = wait_for("the interruption notice at the server",
                     lambda: [n for n in notices_for(stack, pid) if n["kind"] == "interruption"], timeout_s=60)
    polls_through(stack, pid, 10)  # the same notice is served over and over
    assert len([n for n in notices_for(stack, pid) if n["kind"] == "interruption"]) == len(found) == 1


@pytest.mark.reliability(fault="notices out of order (a rebalance older than the interruption already seen) and "
                               "the same notice replayed to the API many times",
                         outcome="each notice stored once, the later one not lost, no 5xx")
def test_notices_out_of_order_and_replayed(stack: LocalStack) -> None:
    pid = primary(stack)
    md = stack.region.metadata(pid)
    md.set_rebalance(datetime.now(UTC) - timedelta(minutes=30))  # older than the interruption above
    rebalance = wait_for("the late, older rebalance notice",
                         lambda: [n for n in notices_for(stack, pid) if n["kind"] == "rebalance"], timeout_s=60)
    assert len(rebalance) == 1
    agent_id, secret = agent_secret(stack, pid)
    replay = {"notices": [{k: rebalance[0][k] for k in ("notice_id", "instance_id", "kind", "payload",
                                                         "detected_at", "action_time") if k in rebalance[0]}]}
    with httpx.Client(base_url=stack.server.url, headers={"Authorization": f"Bearer {secret}"}, trust_env=False) as c:
        answers = [c.post(f"/api/v1/agent/{agent_id}/notices", json=replay) for _ in range(5)]
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    assert all(a.json()["accepted"] == 0 for a in answers)
    assert len([n for n in notices_for(stack, pid) if n["kind"] == "rebalance"]) == 1
    assert len([n for n in notices_for(stack, pid) if n["kind"] == "interruption"]) == 1
    md.clear_notices()


@pytest.mark.reliability(fault="a notice for an instance already gone (terminated) reported by its agent",
                         outcome="refused unless it is the agent's own instance; nothing launched or terminated")
def test_notice_for_an_instance_already_gone(stack: LocalStack) -> None:
    pid = primary(stack)
    agent_id, secret = agent_secret(stack, pid)
    ec2 = stack.region.moto_client("ec2")
    gone = ec2.run_instances(ImageId=stack.region.seed.ami_id, InstanceType="t3.micro", MinCount=1,
                             MaxCount=1)["Instances"][0]["InstanceId"]
    ec2.terminate_instances(InstanceIds=[gone])
    before_commands = stack.op.get("/commands")
    runs_before = len(stack.region.calls.list(action="RunInstances"))
    notice = {"notice_id": "gone-1", "instance_id": gone, "kind": "interruption",
              "payload": {"action": "terminate", "time": datetime.now(UTC).isoformat()},
              "detected_at": datetime.now(UTC).isoformat()}
    with httpx.Client(base_url=stack.server.url, headers={"Authorization": f"Bearer {secret}"}, trust_env=False) as c:
        answer = c.post(f"/api/v1/agent/{agent_id}/notices", json={"notices": [notice]})
    assert answer.status_code == 403, answer.text
    assert notices_for(stack, gone) == []
    assert stack.op.get("/commands") == before_commands
    assert len(stack.region.calls.list(action="RunInstances")) == runs_before
    assert stack.region.instance_state(gone) == "terminated"


# --- a read-only config directory -------------------------------------------------------------------------


@pytest.mark.reliability(fault="read-only config directory at agent start",
                         outcome="the agent exits with a clear error naming the file; the old config is intact")
def test_read_only_config_dir_clear_error_old_config_intact(stack: LocalStack, cmds: AgentCommands) -> None:
    pid = primary(stack)
    wait_for("the primary's agent", lambda: stack.agent_for(pid))  # may be DRAINING after the notice tests
    stack.region.runtime.stop(pid)
    directory = workdir(stack, pid)
    config_path = directory / "spot_optimizer_config.json"
    before = config_path.read_bytes()
    mode = stat.S_IMODE(directory.stat().st_mode)
    directory.chmod(0o500)
    # root ignores directory modes through CAP_DAC_OVERRIDE: run the agent as root without capabilities
    cmds.prefix[pid] = ROOT_WITHOUT_CAPS if os.geteuid() == 0 else ()
    try:
        stack.region.restart_agent(pid)
        proc = stack.region.runtime.get(pid)
        wait_for("the agent to stop", lambda: proc.popen.poll() is not None, timeout_s=60)
        assert proc.popen.returncode == 2
        output = proc.log_path.read_text(errors="replace")
        assert "error:" in output and str(config_path) in output, output[-2000:]
        assert "Traceback" not in output.split("error:")[-1]
    finally:
        cmds.prefix.pop(pid, None)
        directory.chmod(mode)
    assert config_path.read_bytes() == before
    reconnects = stack.agent_log(pid).count("RECONNECTED as agent")
    stack.region.restart_agent(pid)  # leave the agent running for whatever follows
    wait_for("reconnected", lambda: stack.agent_log(pid).count("RECONNECTED as agent") > reconnects)
