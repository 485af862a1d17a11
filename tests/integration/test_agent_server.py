"""A real server process and a real agent process manage instances together (moto in server mode and the
test metadata service stand in for AWS): register, heartbeat, a manual launch executed exactly once,
results through the operator API, the server killed and restarted with nothing lost, the agent killed and
restarted reconnecting with the same id, and an agent killed mid-launch launching nothing twice."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from moto.server import ThreadedMotoServer

from helpers.aws_world import AZS, World, build_world
from helpers.procs import Operator, Proc, agent_proc, free_port, server_proc, wait_for
from spot_optimizer.core.models import REQUEST_ID_TAG
from spot_optimizer.emulator.imds import MetadataServer, MetadataState


@dataclass
class Stack:
    world: World
    moto_url: str
    imds: MetadataState
    imds_url: str
    server: Proc
    agent: Proc
    op: Operator
    tmp: Path
    port: int
    db_url: str

    def restart_server(self) -> None:
        self.server = server_proc(self.db_url, self.port, self.tmp / "server.log", *SERVER_FLAGS).start()
        wait_for("server healthy again", self.op.healthy)

    def restart_agent(self, *extra: str) -> None:
        self.agent = agent_proc(self.op.url, self.imds_url, self.moto_url, self.tmp / "agent" / "config.json",
                                self.tmp / "agent.log", "--heartbeat-interval", "0.3",
                                "--notice-poll-interval", "0.2", *extra).start()

    def agent_row(self) -> dict[str, Any] | None:
        rows = self.op.get("/agents")
        return rows[0] if len(rows) == 1 else None

    def command_status(self, command_id: str) -> dict[str, Any]:
        return dict(self.op.get(f"/commands/{command_id}"))

    def instances_with_request(self, request_id: str) -> list[dict[str, Any]]:
        found = self.world.ec2.describe_instances(Filters=[{"Name": f"tag:{REQUEST_ID_TAG}", "Values": [request_id]}])
        return [i for r in found["Reservations"] for i in r["Instances"]]


SERVER_FLAGS = ("--heartbeat-interval", "0.3", "--command-lease", "2", "--offline-after", "3")


@pytest.fixture()
def stack(db_url: str, tmp_path: Path) -> Iterator[Stack]:
    moto_port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=moto_port, verbose=False)
    moto.start()
    moto_url = f"http://127.0.0.1:{moto_port}"
    httpx.post(moto_url + "/moto-api/reset")  # moto's backends are process-global: start from nothing
    world = build_world(moto_url)
    own = world.ec2.describe_instances(InstanceIds=[world.own_instance_id])["Reservations"][0]["Instances"][0]
    state = MetadataState(instance_id=own["InstanceId"], instance_type=own["InstanceType"],
                          availability_zone=own["Placement"]["AvailabilityZone"], region="eu-west-1",
                          ami_id=own["ImageId"], private_ip=own.get("PrivateIpAddress"), lifecycle="spot")
    imds = MetadataServer(state).start()
    port = free_port()
    server = server_proc(db_url, port, tmp_path / "server.log", *SERVER_FLAGS).start()
    op = Operator(f"http://127.0.0.1:{port}")
    wait_for("server healthy", op.healthy)
    s = Stack(world, moto_url, state, imds.url, server, None, op, tmp_path, port, db_url)  # type: ignore[arg-type]
    s.restart_agent()
    try:
        yield s
    finally:
        s.agent.stop()
        s.server.stop()
        imds.stop()
        moto.stop()


def online(stack: Stack) -> dict[str, Any] | None:
    row = stack.agent_row()
    return row if row and row["state"] == "ONLINE_READY" else None


def test_register_launch_once_restart_both_sides(stack: Stack) -> None:
    row = wait_for("agent registered and online", lambda: online(stack))
    agent_id = row["agent_id"]
    assert row["instance_id"] == stack.world.own_instance_id and row["workload"] == "web"
    assert row["role"] == "primary"

    # A manual launch is executed exactly once and its result is visible through the operator API.
    cmd = stack.op.command(agent_id, "launch", instance_type="m5.large", az=AZS[1], market="spot")
    done = wait_for("launch succeeded", lambda: (c := stack.command_status(cmd["command_id"]))["status"]
                    == "succeeded" and c)
    new_id = done["result"]["instance_id"]
    assert [i["InstanceId"] for i in stack.instances_with_request(cmd["command_id"])] == [new_id]

    # The server is killed; while it is down a rebalance recommendation arrives and the agent keeps it.
    stack.server.kill9()
    stack.imds.set_rebalance(datetime.now(UTC))
    wait_for("agent noticed and queued the notice", lambda: "NOTICE DETECTED: rebalance" in stack.agent.text())
    stack.restart_server()
    notices = wait_for("notice delivered after the restart", lambda: stack.op.get("/notices"))
    assert [n["kind"] for n in notices] == ["rebalance"]

    # A command issued after the restart still runs exactly once.
    cmd2 = stack.op.command(agent_id, "collect_inventory")
    wait_for("inventory collected", lambda: stack.command_status(cmd2["command_id"])["status"] == "succeeded")
    instances = stack.op.get("/instances")
    assert {new_id, stack.world.own_instance_id} <= {i["instance_id"] for i in instances}

    # The agent is killed and restarted: it reconnects with the same id, registers nothing new.
    stack.agent.kill9()
    stack.restart_agent()
    wait_for("agent reconnected", lambda: "RECONNECTED as agent " + agent_id in stack.agent.text())
    assert wait_for("same agent online", lambda: online(stack))["agent_id"] == agent_id
    assert len(stack.op.get("/agents")) == 1
    config = json.loads((stack.tmp / "agent" / "config.json").read_text())
    assert config["agent_id"] == agent_id and config["current_instance_ami"] == stack.world.ami_id

    events = {e["kind"] for e in stack.op.get("/events")}
    assert {"agent_registered", "agent_reconnected", "command_issued", "command_delivered", "command_finished",
            "notice_received"} <= events


def test_toggles_reach_the_agent_config(stack: Stack) -> None:
    row = wait_for("agent online", lambda: online(stack))
    response = stack.op.http.patch(f"/agents/{row['agent_id']}/toggles", json={"auto_terminate": True})
    assert response.status_code == 200, response.text
    path = stack.tmp / "agent" / "config.json"
    wait_for("toggle persisted by the agent", lambda: json.loads(path.read_text())["auto_terminate"] is True)


@pytest.mark.parametrize("crash_at", ["after_aws_call", "before_journal_finish"])
def test_agent_killed_mid_launch_launches_once(stack: Stack, crash_at: str) -> None:
    row = wait_for("agent online", lambda: online(stack))
    stack.agent.stop()
    stack.restart_agent("--crash-at", crash_at)
    cmd = stack.op.command(row["agent_id"], "launch", instance_type="m5.large", az=AZS[2], market="spot")
    wait_for("agent died at the crash point", lambda: not stack.agent.alive(), timeout_s=30)
    assert len(stack.instances_with_request(cmd["command_id"])) == 1  # the AWS call happened
    stack.restart_agent()
    done = wait_for("launch finished after restart",
                    lambda: (c := stack.command_status(cmd["command_id"]))["status"] == "succeeded" and c,
                    timeout_s=40)
    instances = stack.instances_with_request(cmd["command_id"])
    assert len(instances) == 1  # exactly one instance, not two
    assert done["result"]["instance_id"] == instances[0]["InstanceId"]
    assert done["result"]["reused"] is True


def test_notice_is_sent_at_once(stack: Stack) -> None:
    wait_for("agent online", lambda: online(stack))
    stack.imds.set_interruption(datetime.now(UTC) + timedelta(minutes=2))
    notices = wait_for("interruption notice at the server", lambda: stack.op.get("/notices"), timeout_s=10)
    assert notices[0]["kind"] == "interruption"
    assert notices[0]["payload"]["action"] == "terminate"
