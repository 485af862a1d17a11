"""Control-plane faults on the emulated region, with the server process killed for real.

- `kill -9` of the server while commands are being issued and delivered, on SQLite and on PostgreSQL:
  after the restart every command the server acknowledged finishes, none is lost, none runs twice.
- The server down for minutes of emulated time: the agent heartbeats with backoff and keeps its outbox on
  disk; an interruption notice in that time makes the primary's agent act by itself with its last known
  policy, through a throttling storm and capacity errors in every spot pool (bounded retries, pool after
  pool, on-demand last, nothing launched twice); when the server returns it gets the autonomous results
  and sees the new roles in the inventory (EC2 tags).
"""

from __future__ import annotations

import json
import re
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from e2e.conftest import FAST_SERVER, make_stack
from e2e.test_faults_agent import AgentCommands, instances_with_request_id, other_az, primary, workdir
from spot_optimizer.core.models import ROLE_TAG, WORKLOAD_TAG
from spot_optimizer.demo.stack import LocalStack, wait_for

pytestmark = pytest.mark.e2e

NO_LOOP = (*FAST_SERVER, "--decision-interval", "0")
PG_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'server.db'}"
        return
    import psycopg

    try:
        admin = psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 is unreachable ({exc})")
    name = f"spot_faults_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def successful_runs(stack: LocalStack, command_id: str) -> list[Any]:
    return [c for c in stack.region.calls.list(action="RunInstances")
            if c.params.get("ClientToken") == command_id[:64] and c.status < 300]


@pytest.mark.reliability(fault="server kill -9 while commands are being issued and delivered ({db_url})",
                         outcome="after restart every acknowledged command finishes once: one instance each, "
                                 "one successful RunInstances each")
def test_server_killed_while_commands_are_issued_and_delivered(tmp_path: Path, db_url: str) -> None:
    with make_stack(tmp_path / "stack", db_url=db_url, server_flags=NO_LOOP, agent_command=AgentCommands()) as stack:
        pid = primary(stack)
        agent_id = stack.wait_agent(pid)["agent_id"]
        az = other_az(stack)

        def issue() -> str:
            return str(stack.op.command(agent_id, "launch", instance_type="m5.large", az=az,
                                        market="spot")["command_id"])

        acknowledged = [issue() for _ in range(4)]
        wait_for("a command in delivery",
                 lambda: any(stack.op.get(f"/commands/{c}")["status"] != "pending" for c in acknowledged))
        stack.server.kill9()
        with pytest.raises(httpx.HTTPError):
            issue()  # nobody acknowledges a command while the server is down: it is not ours to keep
        stack.restart_server()
        acknowledged += [issue() for _ in range(3)]

        done = [stack.wait_command(c, timeout_s=90) for c in acknowledged]
        assert [d["status"] for d in done] == ["succeeded"] * len(acknowledged), done
        for command in done:
            launched = instances_with_request_id(stack, command["command_id"])
            assert launched == [command["result"]["instance_id"]], command
            assert len(successful_runs(stack, command["command_id"])) == 1, command["command_id"]
        managed = [t for t in stack.region.calls.list(action="RunInstances") if t.status < 300]
        assert len(managed) == len(acknowledged)  # nothing ran that the server did not acknowledge
        listed = {c["command_id"] for c in stack.op.get("/commands")}
        assert set(acknowledged) <= listed


# --- the server down for a long stretch -------------------------------------------------------------------

SPEED = 20.0  # emulated seconds per real second


@pytest.fixture(scope="module")
def lonely(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with make_stack(tmp_path_factory.mktemp("server-down"), server_flags=NO_LOOP, speed=SPEED,
                    agent_command=AgentCommands()) as stack:
        yield stack


def retry_delays(log: str) -> list[float]:
    return [float(x) for x in re.findall(r"Server unreachable .*?retrying in ([\d.]+)s", log)]


@pytest.mark.reliability(
    fault="server down for minutes of emulated time; interruption notice meanwhile; RunInstances throttling "
          "storm and InsufficientInstanceCapacity in every spot pool",
    outcome="agent backs off, keeps its outbox on disk (0600/0700), launches one on-demand replacement after "
            "trying each spot pool with bounded retries, tags roles; server gets it all on return")
def test_server_down_agent_acts_alone_and_reports_later(lonely: LocalStack) -> None:
    stack, region = lonely, lonely.region
    pid = primary(stack)
    agent = stack.wait_agent(pid)
    azs = sorted(region.seed.subnets)
    # The last known policy: every AZ of the region (the config file is where the agent keeps it).
    region.restart_agent(pid)  # SIGTERM: the agent saves its config on the way out
    region.runtime.stop(pid)
    config_path = workdir(stack, pid) / "spot_optimizer_config.json"
    config = json.loads(config_path.read_text())
    config["policy"]["availability_zones"] = azs
    config_path.write_text(json.dumps(config))
    region.restart_agent(pid)
    wait_for("reconnected", lambda: stack.agent_log(pid).count(f"RECONNECTED as agent {agent['agent_id']}") >= 1)

    down_at = region.clock.elapsed()
    stack.server.kill9()
    delays = wait_for("the agent backing off", lambda: (d := retry_delays(stack.agent_log(pid))) and len(d) >= 4 and d,
                      timeout_s=60)
    assert max(delays) >= 3 * min(delays), delays  # exponential backoff, not a tight loop

    region.faults.insufficient_capacity("*", "*", market="spot")
    region.faults.throttle(["RunInstances"], count=3)
    region.faults.throttle(["DescribeInstances"], count=2)
    before = region.calls.list()[-1].seq if region.calls.list() else 0
    region.interrupt(pid, notice_s=3600)

    zombie = wait_for("the old primary tagged zombie", lambda: stack.tags(pid).get(ROLE_TAG) == "zombie", timeout_s=60)
    assert zombie
    log = stack.agent_log(pid)
    assert "acting alone" in log
    runs = [c for c in region.calls.list(action="RunInstances") if c.seq > before]
    ok = [c for c in runs if c.status < 300]
    assert len(ok) == 1, [c.to_dict() for c in runs]  # nothing launched twice
    assert runs[-1] is ok[0] and "InstanceMarketOptions.MarketType" not in ok[0].params  # on-demand, last
    spot_tries = {c.params.get("Placement.AvailabilityZone") or c.params.get("SubnetId") for c in runs
                  if c.params.get("InstanceMarketOptions.MarketType") == "spot"}
    assert len(spot_tries) == len(azs) - 1, spot_tries  # every other AZ's spot pool was tried
    assert {c.error_code for c in runs[:-1]} <= {"InsufficientInstanceCapacity", "RequestLimitExceeded"}
    per_token: dict[str, int] = {}
    for c in runs:
        per_token[c.params["ClientToken"]] = per_token.get(c.params["ClientToken"], 0) + 1
    assert max(per_token.values()) <= 5, per_token  # bounded retries (botocore's max attempts)
    new_id = wait_for("the replacement", lambda: instances_with_request_id(
        stack, ok[0].params["ClientToken"]), timeout_s=10)[0]
    tags = stack.tags(new_id)
    assert tags[ROLE_TAG] == "primary" and tags[WORKLOAD_TAG] == stack.tags(pid)[WORKLOAD_TAG]
    assert stack.describe(new_id).get("InstanceLifecycle") is None  # on-demand

    # While the server is away, what it must hear waits on disk, private.
    outbox = workdir(stack, pid) / "spot_optimizer_config.state" / "outbox"
    kept = sorted(p.name for p in outbox.glob("*.json"))
    assert any(n.endswith("-result.json") for n in kept) and any(n.endswith("-notice.json") for n in kept), kept
    assert stat.S_IMODE(outbox.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in outbox.glob("*.json"))
    assert region.clock.elapsed() - down_at >= 120  # minutes of emulated time without a server

    stack.restart_server()
    autonomous = wait_for("the autonomous results at the server", lambda: [
        c for c in stack.op.get("/commands") if c["command_id"].startswith("auto-") and c["status"] == "succeeded"],
        timeout_s=60)
    kinds = {c["type"] for c in autonomous}
    assert kinds == {"launch", "promote"}, autonomous
    launch = next(c for c in autonomous if c["type"] == "launch")
    assert launch["result"]["instance_id"] == new_id
    assert [n for n in stack.op.get("/notices") if n["instance_id"] == pid and n["kind"] == "interruption"]
    wait_for("the outbox emptied", lambda: not list(outbox.glob("*.json")), timeout_s=30)
    # The server reconciles its view of the fleet from the EC2 tags the agent reports.
    inventory = stack.op.command(agent["agent_id"], "collect_inventory")
    assert stack.wait_command(inventory["command_id"])["status"] == "succeeded"
    view = wait_for("inventory with the new roles", lambda: (rows := {i["instance_id"]: i for i in stack.op.get(
        "/instances")}) and new_id in rows and rows, timeout_s=30)
    assert view[new_id]["role"] == "primary" and view[pid]["role"] == "zombie"
    assert wait_for("agent role zombie", lambda: stack.agent_for(pid) and stack.agent_for(pid)["role"] == "zombie")
