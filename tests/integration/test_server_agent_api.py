"""The agent API on both databases: register, reconnect, heartbeat, commands, results, reports."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from helpers.records import inventory_record
from spot_optimizer.server.models import AgentRow

HB = {"state": "ONLINE_READY", "version": "0.1.0"}


def heartbeat(client: TestClient, agent: Any, **extra: Any) -> Any:
    response = client.post(
        agent.url("heartbeat"), json={**HB, "instance_id": agent.instance_id, **extra}, headers=agent.headers
    )
    assert response.status_code == 200, response.text
    return response.json()


def issue(
    client: TestClient,
    admin: dict[str, str],
    agent_id: str,
    type_: str = "collect_inventory",
    params: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    response = client.post(
        "/api/v1/commands",
        json={"agent_id": agent_id, "type": type_, "params": params or {}, **extra},
        headers=admin,
    )
    assert response.status_code == 201, response.text
    return response.json()


def command_status(client: TestClient, admin: dict[str, str], command_id: str) -> dict[str, Any]:
    response = client.get(f"/api/v1/commands/{command_id}", headers=admin)
    assert response.status_code == 200, response.text
    return response.json()


def result(command_id: str, status: str = "succeeded", **extra: Any) -> dict[str, Any]:
    return {
        "command_id": command_id,
        "status": status,
        "finished_at": "2025-01-01T12:00:05Z",
        "result": {"ok": True},
        **extra,
    }


def events(client: TestClient, admin: dict[str, str], **params: str) -> list[dict[str, Any]]:
    response = client.get("/api/v1/events", params=params, headers=admin)
    assert response.status_code == 200, response.text
    return response.json()


def test_register_gives_id_and_secret_stored_hashed(client, admin, make_agent, server_app):
    agent = make_agent("i-0aaa")
    assert agent.workload == "i-0aaa"  # default workload: the instance id
    with server_app.state.session_factory() as session:
        row = session.scalar(select(AgentRow).where(AgentRow.agent_id == agent.agent_id))
        assert row.secret_hash == hashlib.sha256(agent.secret.encode()).hexdigest()
        assert agent.secret not in str(row.__dict__)
    listed = client.get("/api/v1/agents", headers=admin).json()
    assert [(a["agent_id"], a["state"], a["workload"]) for a in listed] == [(agent.agent_id, "ONLINE_READY", "i-0aaa")]
    assert [e["kind"] for e in events(client, admin, agent_id=agent.agent_id)] == ["agent_registered"]
    workloads = client.get("/api/v1/workloads", headers=admin).json()
    assert [w["name"] for w in workloads] == ["i-0aaa"]


def test_register_named_workload_keeps_agent_toggles_and_role(client, admin, reg_body):
    body = reg_body("i-0bbb", "web", role="primary", toggles={"auto_switching": True})
    response = client.post("/api/v1/agent/register", json=body)
    assert response.status_code == 200
    data = response.json()
    assert data["workload"] == "web"
    assert data["toggles"]["auto_switching"] is True
    agent = client.get(f"/api/v1/agents/{data['agent_id']}", headers=admin).json()
    assert agent["role"] == "primary"


def test_register_with_wrong_enrollment_token_is_refused_and_changes_nothing(client, admin, reg_body):
    body = reg_body("i-0ccc")
    body["enrollment_token"] = "not-the-token"
    response = client.post("/api/v1/agent/register", json=body)
    assert response.status_code == 401
    assert "enrollment token" in response.json()["detail"]
    assert "not-the-token" not in response.text
    assert client.get("/api/v1/agents", headers=admin).json() == []
    assert events(client, admin) == []


def test_reregistering_the_same_instance_keeps_the_id_and_rotates_the_secret(client, make_agent):
    first = make_agent("i-0ddd")
    second = make_agent("i-0ddd")
    assert second.agent_id == first.agent_id
    assert second.secret != first.secret
    old = client.post(first.url("heartbeat"), json={**HB, "instance_id": "i-0ddd"}, headers=first.headers)
    assert old.status_code == 401
    heartbeat(client, second)


def test_reconnect_with_persisted_id_returns_toggles(client, admin, make_agent, reg_body):
    agent = make_agent("i-0eee", "api")
    client.patch(f"/api/v1/agents/{agent.agent_id}/toggles", json={"auto_terminate": True}, headers=admin)
    body = {"metadata": reg_body("i-0eee")["metadata"], "version": "0.2.0"}
    response = client.post(agent.url("reconnect"), json=body, headers=agent.headers)
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["agent_id"] == agent.agent_id and data["workload"] == "api"
    assert data["toggles"]["auto_terminate"] is True
    assert client.get(f"/api/v1/agents/{agent.agent_id}", headers=admin).json()["version"] == "0.2.0"
    assert "agent_reconnected" in [e["kind"] for e in events(client, admin)]


def test_reconnect_from_another_instance_is_refused(client, admin, make_agent, reg_body):
    agent = make_agent("i-0fff")
    body = {"metadata": reg_body("i-0999")["metadata"], "version": "0.2.0"}
    response = client.post(agent.url("reconnect"), json=body, headers=agent.headers)
    assert response.status_code == 403
    assert "i-0fff" in response.json()["detail"]
    assert client.get(f"/api/v1/agents/{agent.agent_id}", headers=admin).json()["version"] == "0.1.0"


def test_heartbeat_delivers_a_pending_command_once_within_its_lease(client, admin, make_agent, clock):
    agent = make_agent()
    cmd = issue(client, admin, agent.agent_id, "launch", {"instance_type": "m5.large", "az": "us-east-1b"})
    assert cmd["status"] == "pending"
    first = heartbeat(client, agent)
    assert [c["command_id"] for c in first["commands"]] == [cmd["command_id"]]
    assert first["commands"][0]["params"]["instance_type"] == "m5.large"
    assert command_status(client, admin, cmd["command_id"])["status"] == "delivered"
    clock.advance(10)  # lease is 30 s
    assert heartbeat(client, agent)["commands"] == []


def test_a_command_without_result_is_redelivered_after_its_lease(client, admin, make_agent, clock):
    agent = make_agent()
    cmd = issue(client, admin, agent.agent_id)
    heartbeat(client, agent)
    clock.advance(31)
    again = heartbeat(client, agent)
    assert [c["command_id"] for c in again["commands"]] == [cmd["command_id"]]
    status = command_status(client, admin, cmd["command_id"])
    assert status["status"] == "delivered" and status["delivery_count"] == 2
    delivered = events(client, admin, kind="command_delivered")
    assert len(delivered) == 2


def test_a_command_expires_after_its_deadline(client, admin, make_agent, clock):
    agent = make_agent()
    cmd = issue(client, admin, agent.agent_id, deadline_s=60)
    clock.advance(61)
    assert heartbeat(client, agent)["commands"] == []
    assert command_status(client, admin, cmd["command_id"])["status"] == "expired"
    assert [e["command_id"] for e in events(client, admin, kind="command_expired")] == [cmd["command_id"]]


def test_a_result_posted_twice_is_accepted_once(client, admin, make_agent):
    agent = make_agent()
    cmd = issue(client, admin, agent.agent_id)
    heartbeat(client, agent)
    first = client.post(agent.url("results"), json={"results": [result(cmd["command_id"])]}, headers=agent.headers)
    assert first.status_code == 200
    assert (first.json()["accepted"], first.json()["duplicates"]) == (1, 0)
    again = result(cmd["command_id"], "failed", error="late retry")
    second = client.post(agent.url("results"), json={"results": [again]}, headers=agent.headers)
    assert second.status_code == 200
    assert (second.json()["accepted"], second.json()["duplicates"]) == (0, 1)
    assert second.json()["detail"]["results"] == {cmd["command_id"]: "duplicate"}
    stored = command_status(client, admin, cmd["command_id"])
    assert stored["status"] == "succeeded" and stored["result"] == {"ok": True} and stored["error"] is None
    assert len(events(client, admin, kind="command_finished")) == 1


def test_a_finished_command_is_not_redelivered(client, admin, make_agent, clock):
    agent = make_agent()
    cmd = issue(client, admin, agent.agent_id)
    heartbeat(client, agent)
    client.post(agent.url("results"), json={"results": [result(cmd["command_id"])]}, headers=agent.headers)
    clock.advance(60)
    assert heartbeat(client, agent)["commands"] == []


def test_an_autonomous_result_is_stored_with_its_command(client, admin, make_agent):
    agent = make_agent()
    command = {
        "command_id": "a" * 32,
        "type": "launch",
        "params": {"instance_type": "m5.large"},
        "reason": "interruption notice while the server was down",
    }
    body = {"results": [result("a" * 32, autonomous=True, command=command)]}
    response = client.post(agent.url("results"), json=body, headers=agent.headers)
    assert response.status_code == 200 and response.json()["accepted"] == 1
    stored = command_status(client, admin, "a" * 32)
    assert (stored["status"], stored["source"], stored["agent_id"]) == ("succeeded", "autonomous", agent.agent_id)
    again = client.post(agent.url("results"), json=body, headers=agent.headers)
    assert again.json()["duplicates"] == 1


def test_liveness_offline_after_missed_intervals_and_back_on_heartbeat(client, admin, make_agent, clock, server_app):
    from spot_optimizer.server.app import sweep_once

    agent = make_agent()
    clock.advance(14)  # 3 intervals of 5 s not yet missed
    sweep_once(server_app)
    assert client.get(f"/api/v1/agents/{agent.agent_id}", headers=admin).json()["state"] == "ONLINE_READY"
    clock.advance(2)
    sweep_once(server_app)
    assert client.get(f"/api/v1/agents/{agent.agent_id}", headers=admin).json()["state"] == "OFFLINE"
    heartbeat(client, agent)
    assert client.get(f"/api/v1/agents/{agent.agent_id}", headers=admin).json()["state"] == "ONLINE_READY"
    kinds = [e["kind"] for e in events(client, admin, agent_id=agent.agent_id)]
    assert kinds == ["agent_registered", "agent_offline", "agent_online"]


def test_liveness_is_also_computed_on_read(client, admin, make_agent, clock):
    agent = make_agent()
    clock.advance(16)
    listed = client.get("/api/v1/agents", headers=admin).json()
    assert [(a["agent_id"], a["state"]) for a in listed] == [(agent.agent_id, "OFFLINE")]


def test_role_change_in_heartbeat_is_an_event(client, admin, make_agent):
    agent = make_agent(workload="db")
    heartbeat(client, agent, role="replica")
    heartbeat(client, agent, role="primary")
    roles = [(e["data"]["from"], e["data"]["to"]) for e in events(client, admin, kind="role_changed")]
    assert roles == [(None, "replica"), ("replica", "primary")]


def notice(instance_id: str, kind: str = "interruption") -> dict[str, Any]:
    payload = {"action": "terminate", "time": "2025-01-01T12:02:00Z"}
    from spot_optimizer.core.models import Notice, NoticeKind

    return {
        "notice_id": Notice.make_id(NoticeKind(kind), instance_id, payload),
        "kind": kind,
        "instance_id": instance_id,
        "payload": payload,
        "detected_at": "2025-01-01T12:00:00Z",
        "action_time": "2025-01-01T12:02:00Z",
    }


def test_notices_are_stored_once_and_logged(client, admin, make_agent):
    agent = make_agent(workload="web")
    body = {"notices": [notice(agent.instance_id)]}
    first = client.post(agent.url("notices"), json=body, headers=agent.headers)
    assert first.json()["accepted"] == 1
    second = client.post(agent.url("notices"), json=body, headers=agent.headers)
    assert second.json()["duplicates"] == 1
    stored = client.get("/api/v1/notices", params={"workload": "web"}, headers=admin).json()
    assert [(n["kind"], n["instance_id"]) for n in stored] == [("interruption", agent.instance_id)]
    assert len(events(client, admin, kind="notice_received")) == 1


def test_prices_and_inventory_reach_the_operator_api(client, admin, make_agent):
    agent = make_agent(workload="web")
    prices = {
        "spot": [
            {"instance_type": "m5.large", "az": "us-east-1a", "price": 0.04, "timestamp": "2025-01-01T11:00:00Z"},
            {"instance_type": "m5.large", "az": "us-east-1a", "price": 0.03, "timestamp": "2025-01-01T11:30:00Z"},
        ],
        "ondemand": [{"instance_type": "m5.large", "region": "us-east-1", "price": 0.096}],
    }
    ack = client.post(agent.url("prices"), json=prices, headers=agent.headers).json()
    assert ack["accepted"] == 3
    assert client.post(agent.url("prices"), json=prices, headers=agent.headers).json()["duplicates"] == 2
    listed = client.get("/api/v1/prices", headers=admin).json()
    assert [(p["az"], p["price"]) for p in listed["spot"]] == [("us-east-1a", 0.03)]
    assert listed["ondemand"][0]["price"] == 0.096
    inventory = {"instances": [inventory_record(agent.instance_id, "web", "primary")]}
    assert client.post(agent.url("inventory"), json=inventory, headers=agent.headers).json()["accepted"] == 1
    instances = client.get("/api/v1/instances", params={"workload": "web"}, headers=admin).json()
    assert [(i["instance_id"], i["role"], i["managed"]) for i in instances] == [(agent.instance_id, "primary", True)]




def test_a_new_agent_in_a_workload_inherits_its_toggles(client: Any, admin: dict[str, str],
                                                        make_agent: Callable[..., Any]) -> None:
    first = make_agent("i-00000000000000a1", workload="shop")
    response = client.patch(f"/api/v1/agents/{first.agent_id}/toggles", json={"auto_terminate": True},
                            headers=admin)
    assert response.status_code == 200
    second = make_agent("i-00000000000000a2", workload="shop")
    other = make_agent("i-00000000000000a3", workload="elsewhere")
    rows = {a["agent_id"]: a for a in client.get("/api/v1/agents", headers=admin).json()}
    assert rows[second.agent_id]["toggles"]["auto_terminate"] is True
    assert rows[other.agent_id]["toggles"]["auto_terminate"] is False


def test_registration_records_the_agents_own_managed_instance(client: TestClient, admin: dict[str, str],
                                                              reg_body: Callable[..., dict[str, Any]]) -> None:
    """Before any inventory report the server knows the agent's own instance from its tags, so the
    operator can promote a replica away from it at once."""
    tags = {"ManagedBy": "SpotOptimizer", "SpotOptimizer:Role": "primary", "SpotOptimizer:Workload": "api"}
    body = reg_body("i-00000000000000b1", workload="api", launch_config={
        "ami_id": "ami-12345678", "instance_type": "m5.large", "availability_zone": "us-east-1a", "tags": tags})
    assert client.post("/api/v1/agent/register", json=body).status_code == 200
    rows = {r["instance_id"]: r for r in client.get("/api/v1/instances", headers=admin).json()}
    own = rows["i-00000000000000b1"]
    assert own["managed"] is True and own["role"] == "primary" and own["workload"] == "api"
    assert own["pool"] == "us-east-1/m5.large/us-east-1a/spot"
    unmanaged = reg_body("i-00000000000000b2", workload="api", launch_config={
        "ami_id": "ami-12345678", "instance_type": "m5.large", "availability_zone": "us-east-1a", "tags": {}})
    assert client.post("/api/v1/agent/register", json=unmanaged).status_code == 200
    rows = {r["instance_id"]: r for r in client.get("/api/v1/instances", headers=admin).json()}
    assert rows["i-00000000000000b2"]["managed"] is False
