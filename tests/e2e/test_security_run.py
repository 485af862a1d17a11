"""A full run on the emulated region (launch, promote, terminate, prices, inventory, a notice, a restart):

- every AWS action the agents called is in deploy/iam-policy.json, and the policy grants nothing never called;
- no secret (admin token, enrollment token, any agent secret) in any log, event or error message;
- config and outbox files 0600, their directories 0700.
"""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e.conftest import make_stack
from e2e.test_faults_agent import AgentCommands, other_az, primary, workdir
from spot_optimizer.demo.stack import LocalStack, wait_for

pytestmark = pytest.mark.e2e

POLICY = Path(__file__).resolve().parents[2] / "deploy" / "iam-policy.json"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with make_stack(tmp_path_factory.mktemp("security-run"), agent_command=AgentCommands(real=2)) as stack:
        pid = primary(stack)
        agent = stack.wait_agent(pid)["agent_id"]
        done = lambda c: stack.wait_command(c["command_id"], timeout_s=60)  # noqa: E731
        launched = done(stack.op.command(agent, "launch", instance_type="m5.large", az=other_az(stack), market="spot"))
        new = launched["result"]["instance_id"]
        stack.wait_agent(new)  # the second real agent: registers with the enrollment token too
        done(stack.op.command(agent, "collect_prices", instance_types=["m5.large"]))
        done(stack.op.command(agent, "collect_inventory"))
        done(stack.op.command(agent, "promote", instance_id=new, old_instance_id=pid))
        done(stack.op.command(agent, "promote", instance_id=pid, old_instance_id=new))
        done(stack.op.command(agent, "terminate", instance_id=new, reason="security run"))
        stack.op.http.post("/commands", json={"agent_id": agent, "type": "launch", "params": {"az": "nowhere"}})
        stack.op.http.get("/agents", headers={"Authorization": "Bearer wrong-" + stack.admin_token})
        stack.region.kill_agent(pid)
        stack.region.restart_agent(pid)
        stack.wait_agent(pid)
        yield stack


def all_actions(statement: dict[str, object]) -> list[str]:
    action = statement["Action"]
    return list(action) if isinstance(action, list) else [str(action)]


@pytest.mark.reliability(fault="IAM: an agent action missing from deploy/iam-policy.json, or a grant never used",
                         outcome="the policy's actions equal the agents' recorded AWS actions (+ iam:PassRole "
                                 "for launches with an instance profile)")
def test_iam_policy_matches_the_actions_agents_call(run: LocalStack) -> None:
    calls = run.region.calls.list()
    called = {c.iam_action for c in calls}
    granted = {a for st in json.loads(POLICY.read_text())["Statement"] for a in all_actions(st)}
    passes_role = any(c.action == "RunInstances" and any(k.startswith("IamInstanceProfile") for k in c.params)
                      for c in calls)
    assert passes_role  # RunInstances with an instance profile is what needs iam:PassRole
    assert called - granted == set(), f"called but not in the policy: {called - granted}"
    assert granted - called - {"iam:PassRole"} == set(), f"granted but never called: {granted - called}"


def secrets_of(run: LocalStack) -> dict[str, str]:
    found = {"admin token": run.admin_token, "enrollment token": run.enrollment_token}
    for config in (Path(run.region.run_dir) / "instances").glob("*/spot_optimizer_config.json"):
        data = json.loads(config.read_text())
        if data.get("agent_secret"):
            found[f"agent secret of {config.parent.name}"] = data["agent_secret"]
    return found


@pytest.mark.reliability(fault="secrets in logs, events, error messages",
                         outcome="no admin token, enrollment token or agent secret in any log file, the events "
                                 "API or an error answer")
def test_no_secret_in_logs_events_or_errors(run: LocalStack) -> None:
    secrets = secrets_of(run)
    assert sum(k.startswith("agent secret") for k in secrets) >= 2
    logs = [run.server.log, *Path(run.region.run_dir).rglob("*.log")]
    assert len([p for p in logs if p.name == "agent.file.log"]) >= 2 and run.server.log.exists()
    texts = {str(p): p.read_text(errors="replace") for p in logs}
    texts["events API"] = json.dumps(run.op.get("/events"))
    texts["commands API"] = json.dumps(run.op.get("/commands"))
    texts["agents API"] = json.dumps(run.op.get("/agents"))
    texts["error answer"] = run.op.http.get("/agents", headers={"Authorization": "Bearer " + run.admin_token + "x"}
                                            ).text
    assert "REGISTERED as agent" in "".join(texts.values())  # the logs are really there
    for where, text in texts.items():
        for name, secret in secrets.items():
            assert secret not in text, f"{name} found in {where}"


@pytest.mark.reliability(fault="agent state files readable by other users",
                         outcome="config, journal, outbox files 0600; state and outbox directories 0700")
def test_agent_files_are_private(run: LocalStack) -> None:
    pid = primary(run)
    config = workdir(run, pid) / "spot_optimizer_config.json"
    state = workdir(run, pid) / "spot_optimizer_config.state"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert stat.S_IMODE((state / "outbox").stat().st_mode) == 0o700
    files = [p for p in state.rglob("*") if p.is_file()]
    assert files
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    wait_for("nothing left in the outbox", lambda: not list((state / "outbox").glob("*.json")), timeout_s=30)
