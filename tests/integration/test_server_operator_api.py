"""The operator API on both databases: toggles, manual commands, events, decisions, health, metrics."""

from __future__ import annotations

from typing import Any

from helpers.records import inventory_record

HB = {"state": "ONLINE_READY", "version": "0.1.0"}




def test_toggles_set_by_operator_reach_the_agent_in_its_heartbeat(client, admin, make_agent):
    agent = make_agent(workload="web")
    response = client.patch(f"/api/v1/agents/{agent.agent_id}/toggles", json={"auto_switching": True}, headers=admin)
    assert response.status_code == 200
    assert response.json()["toggles"]["auto_switching"] is True
    hb = client.post(agent.url("heartbeat"), json={**HB, "instance_id": agent.instance_id}, headers=agent.headers)
    assert hb.json()["toggles"] == {
        "auto_switching": True,
        "auto_terminate": False,
        "manual_replica": False,
        "emergency_only": False,
    }
    full = {"auto_switching": False, "auto_terminate": True, "manual_replica": True, "emergency_only": True}
    assert client.put(f"/api/v1/agents/{agent.agent_id}/toggles", json=full, headers=admin).json()["toggles"] == full
    changes = client.get("/api/v1/events", params={"kind": "toggles_changed"}, headers=admin).json()
    assert [e["data"]["to"] for e in changes] == [{**hb.json()["toggles"]}, full]


def test_bad_toggle_requests_are_refused(client, admin, make_agent):
    agent = make_agent()
    unknown = client.patch(f"/api/v1/agents/{agent.agent_id}/toggles", json={"turbo": True}, headers=admin)
    assert unknown.status_code == 422 and "turbo" in unknown.json()["detail"]
    missing = client.patch("/api/v1/agents/nobody/toggles", json={"auto_switching": True}, headers=admin)
    assert missing.status_code == 404 and "unknown agent" in missing.json()["detail"]
    assert client.get("/api/v1/events", params={"kind": "toggles_changed"}, headers=admin).json() == []


def test_manual_terminate_needs_an_instance_the_workload_manages(client, admin, make_agent):
    agent = make_agent("i-0web1", workload="web")
    inventory = {
        "instances": [
            inventory_record("i-0managed", "web"),
            inventory_record("i-0foreign", "db"),
            inventory_record("i-0unmanaged", "web", managed=False),
        ]
    }
    client.post(agent.url("inventory"), json=inventory, headers=agent.headers)

    def terminate(instance_id: str) -> Any:
        body = {"agent_id": agent.agent_id, "type": "terminate", "params": {"instance_id": instance_id}}
        return client.post("/api/v1/commands", json=body, headers=admin)

    ok = terminate("i-0managed")
    assert ok.status_code == 201 and ok.json()["status"] == "pending"
    for instance_id, why in [
        ("i-0foreign", "belongs to workload 'db'"),
        ("i-0unmanaged", "ManagedBy"),
        ("i-0nowhere", "not in the inventory"),
    ]:
        refused = terminate(instance_id)
        assert refused.status_code == 409, refused.text
        assert why in refused.json()["detail"] and instance_id in refused.json()["detail"]
    promote = client.post(
        "/api/v1/commands",
        json={"agent_id": agent.agent_id, "type": "promote", "params": {"instance_id": "i-0foreign"}},
        headers=admin,
    )
    assert promote.status_code == 409
    commands = client.get("/api/v1/commands", headers=admin).json()
    assert [c["params"]["instance_id"] for c in commands] == ["i-0managed"]


def test_manual_command_validation(client, admin, make_agent):
    agent = make_agent()
    cases = [
        ({"agent_id": agent.agent_id, "type": "reboot"}, 422, "type"),
        ({"agent_id": agent.agent_id, "type": "launch", "params": {}}, 422, "instance_type"),
        (
            {"agent_id": agent.agent_id, "type": "launch", "params": {"instance_type": "m5.large", "market": "x"}},
            422,
            "market",
        ),
        ({"agent_id": "nobody", "type": "collect_prices"}, 404, "unknown agent"),
    ]
    for body, status, words in cases:
        response = client.post("/api/v1/commands", json=body, headers=admin)
        assert response.status_code == status, (body, response.text)
        assert words in response.json()["detail"]
    assert client.get("/api/v1/commands", headers=admin).json() == []
    launch = client.post(
        "/api/v1/commands",
        json={
            "agent_id": agent.agent_id,
            "type": "launch",
            "params": {"instance_type": "c5.large", "market": "on-demand"},
        },
        headers=admin,
    )
    assert launch.status_code == 201
    assert launch.json()["params"]["workload"] == agent.workload
    assert len(launch.json()["command_id"]) == 32


def test_events_filter_by_workload_agent_and_time(client, admin, make_agent, clock):
    web = make_agent("i-0web", workload="web")
    clock.advance(60)
    db = make_agent("i-0db", workload="db")
    all_events = client.get("/api/v1/events", headers=admin).json()
    assert len(all_events) == 2
    by_workload = client.get("/api/v1/events", params={"workload": "db"}, headers=admin).json()
    assert [e["agent_id"] for e in by_workload] == [db.agent_id]
    by_agent = client.get("/api/v1/events", params={"agent_id": web.agent_id}, headers=admin).json()
    assert [e["workload"] for e in by_agent] == ["web"]
    since = client.get("/api/v1/events", params={"since": "2025-01-01T12:00:30Z"}, headers=admin).json()
    assert [e["workload"] for e in since] == ["db"]
    naive = client.get("/api/v1/events", params={"since": "2025-01-01T12:00:30"}, headers=admin).json()
    assert naive == since
    bad = client.get("/api/v1/events", params={"since": "yesterday"}, headers=admin)
    assert bad.status_code == 422 and "since" in bad.json()["detail"]


def test_decisions_are_recorded_and_listed(client, admin, make_agent, server_app, clock):
    from spot_optimizer.server.services.decisions import record_decision

    agent = make_agent(workload="web")
    with server_app.state.session_factory() as session:
        row = record_decision(
            session,
            workload="web",
            actions=[{"type": "launch", "pool": "p"}],
            rationale=["cheaper by 40 %"],
            now=clock(),
        )
    listed = client.get("/api/v1/decisions", params={"workload": "web"}, headers=admin).json()
    assert [(d["decision_id"], d["rationale"]) for d in listed] == [(row.decision_id, ["cheaper by 40 %"])]
    kinds = [e["kind"] for e in client.get("/api/v1/events", params={"workload": "web"}, headers=admin).json()]
    assert kinds == ["agent_registered", "decision"]
    assert agent.workload == "web"


def test_health_metrics_and_openapi(client, make_agent):
    make_agent()
    assert client.get("/healthz").json()["status"] == "ok"
    metrics = client.get("/metrics").text
    assert 'spot_optimizer_agents{state="ONLINE_READY"} 1.0' in metrics
    assert "spot_optimizer_http_requests_total" in metrics
    paths = client.get("/openapi.json").json()["paths"]
    assert "/api/v1/agent/{agent_id}/heartbeat" in paths and "/api/v1/commands" in paths
    assert client.get("/docs").status_code == 200


def test_token_created_over_the_api_works_once_shown(client, admin, reg_body):
    response = client.post("/api/v1/tokens", json={"kind": "enrollment"}, headers=admin)
    assert response.status_code == 201
    body = reg_body("i-0new")
    body["enrollment_token"] = response.json()["token"]
    assert client.post("/api/v1/agent/register", json=body).status_code == 200


def test_db_upgrade_is_idempotent(db_url, server_app):
    from spot_optimizer.server.db import upgrade

    upgrade(db_url)
    upgrade(db_url)
