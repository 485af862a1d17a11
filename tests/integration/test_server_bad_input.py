"""Bad input gets a 4xx with a message saying what is wrong, and changes nothing."""

from __future__ import annotations

from typing import Any

import pytest

HB = {"state": "ONLINE_READY", "version": "0.1.0"}


def snapshot(client, admin) -> tuple[Any, Any, Any]:
    agents = client.get("/api/v1/agents", headers=admin).json()
    commands = client.get("/api/v1/commands", headers=admin).json()
    events = client.get("/api/v1/events", headers=admin).json()
    return agents, commands, events


@pytest.mark.parametrize(
    ("case", "status", "words"),
    [
        ("missing_auth", 401, "missing Authorization"),
        ("wrong_scheme", 401, "malformed Authorization"),
        ("wrong_secret", 401, "wrong agent secret"),
        ("unknown_agent", 404, "unknown agent"),
        ("malformed_json", 422, "malformed JSON"),
        ("missing_field", 422, "instance_id"),
        ("oversized_body", 413, "larger than the limit"),
        ("other_instance", 403, "cannot heartbeat for instance"),
        ("unknown_state", 422, "state"),
    ],
)
def test_bad_heartbeats_are_refused(client, admin, make_agent, case, status, words):
    agent = make_agent("i-0good")
    before = snapshot(client, admin)
    url, headers = agent.url("heartbeat"), dict(agent.headers)
    kwargs: dict[str, Any] = {"json": {**HB, "instance_id": agent.instance_id}}
    if case == "missing_auth":
        headers = {}
    elif case == "wrong_scheme":
        headers = {"Authorization": f"Basic {agent.secret}"}
    elif case == "wrong_secret":
        headers = {"Authorization": "Bearer nope"}
    elif case == "unknown_agent":
        url = "/api/v1/agent/" + "f" * 32 + "/heartbeat"
    elif case == "malformed_json":
        kwargs = {"content": b'{"state": "ONLINE_READY", ', "headers": {"content-type": "application/json"}}
    elif case == "missing_field":
        kwargs = {"json": HB}
    elif case == "oversized_body":
        kwargs = {"json": {**HB, "instance_id": agent.instance_id, "pad": "x" * (1024 * 1024 + 10)}}
    elif case == "other_instance":
        kwargs = {"json": {**HB, "instance_id": "i-0other"}}
    elif case == "unknown_state":
        kwargs = {"json": {**HB, "instance_id": agent.instance_id, "state": "DANCING"}}
    extra_headers = kwargs.pop("headers", {})
    response = client.post(url, headers={**headers, **extra_headers}, **kwargs)
    assert response.status_code == status, response.text
    assert words in response.json()["detail"]
    assert agent.secret not in response.text
    assert snapshot(client, admin) == before


def test_chunked_oversized_body_is_refused(client, make_agent):
    agent = make_agent()

    def chunks():
        for _ in range(20):
            yield b"x" * 65536

    response = client.post(agent.url("notices"), content=chunks(), headers=agent.headers)
    assert response.status_code == 413


def test_result_for_another_agents_command_is_refused(client, admin, make_agent):
    mine, other = make_agent("i-0mine"), make_agent("i-0other")
    cmd = client.post(
        "/api/v1/commands", json={"agent_id": mine.agent_id, "type": "collect_inventory"}, headers=admin
    ).json()
    before = snapshot(client, admin)
    body = {"results": [{"command_id": cmd["command_id"], "status": "succeeded", "finished_at": "2025-01-01T12:00Z"}]}
    response = client.post(other.url("results"), json=body, headers=other.headers)
    assert response.status_code == 403
    assert "belongs to another agent" in response.json()["detail"]
    assert snapshot(client, admin) == before


@pytest.mark.parametrize(
    ("result", "status", "words"),
    [
        ({"command_id": "0" * 32, "status": "succeeded"}, 404, "unknown command"),
        ({"command_id": "CMD", "status": "delivered"}, 422, "must be 'succeeded' or 'failed'"),
        ({"command_id": "0" * 32, "status": "succeeded", "autonomous": True}, 422, "must embed its command"),
        (
            {
                "command_id": "0" * 32,
                "status": "succeeded",
                "autonomous": True,
                "command": {"command_id": "0" * 32, "type": "reboot"},
            },
            422,
            "type",
        ),
    ],
)
def test_bad_results_change_nothing(client, admin, make_agent, result, status, words):
    agent = make_agent()
    cmd = client.post(
        "/api/v1/commands", json={"agent_id": agent.agent_id, "type": "collect_inventory"}, headers=admin
    ).json()
    if result["command_id"] == "CMD":
        result = {**result, "command_id": cmd["command_id"]}
    good = {"command_id": cmd["command_id"], "status": "succeeded", "finished_at": "2025-01-01T12:00Z"}
    before = snapshot(client, admin)
    # A good result in the same batch is not applied either: the whole batch is refused.
    body = {"results": [good, {"finished_at": "2025-01-01T12:00Z", **result}]}
    response = client.post(agent.url("results"), json=body, headers=agent.headers)
    assert response.status_code == status, response.text
    assert words in response.json()["detail"]
    assert snapshot(client, admin) == before


def test_notice_for_an_instance_that_is_not_the_agents_own_is_refused(client, admin, make_agent):
    agent = make_agent("i-0mine")
    before = snapshot(client, admin)
    body = {
        "notices": [
            {
                "notice_id": "n1",
                "kind": "rebalance",
                "instance_id": "i-0else",
                "payload": {},
                "detected_at": "2025-01-01T12:00Z",
            }
        ]
    }
    response = client.post(agent.url("notices"), json=body, headers=agent.headers)
    assert response.status_code == 403
    assert "i-0else" in response.json()["detail"]
    assert snapshot(client, admin) == before
    assert client.get("/api/v1/notices", headers=admin).json() == []


OPERATOR_PATHS = [
    "/api/v1/agents",
    "/api/v1/commands",
    "/api/v1/events",
    "/api/v1/workloads",
    "/api/v1/instances",
    "/api/v1/prices",
    "/api/v1/notices",
    "/api/v1/decisions",
]


def test_operator_api_needs_the_admin_token(client):
    bad = [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Bearer test-enrollment-token"}]
    for path in OPERATOR_PATHS:
        for headers in bad:
            response = client.get(path, headers=headers)
            assert response.status_code == 401, (path, headers)
            detail = response.json()["detail"]
            assert "Authorization" in detail or "admin token is not valid" in detail
    response = client.post("/api/v1/commands", json={"agent_id": "x", "type": "launch"})
    assert response.status_code == 401
