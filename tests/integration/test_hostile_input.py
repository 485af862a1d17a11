"""Hostile input against the server (SQLite and PostgreSQL): a 4xx, a log line, and nothing changed.

Tokens too: random, stored hashed, compared in constant time, revocable, per-agent secrets confined to their
own agent, admin scope separate.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import pytest
from sqlalchemy import create_engine, text

ROUTES_WITH_BODIES = [
    ("agent", "heartbeat"), ("agent", "results"), ("agent", "notices"), ("agent", "prices"), ("agent", "inventory"),
    ("operator", "/api/v1/commands"), ("operator", "/api/v1/tokens"), ("register", "/api/v1/agent/register"),
]


def snapshot(client: Any, admin: dict[str, str]) -> tuple[Any, ...]:
    return tuple(client.get(f"/api/v1/{what}", headers=admin).json()
                 for what in ("agents", "commands", "notices", "instances", "workloads"))


def target(kind: str, where: str, agent: Any, admin: dict[str, str]) -> tuple[str, dict[str, str]]:
    if kind == "agent":
        return agent.url(where), agent.headers
    if kind == "operator":
        return where, admin
    return where, {}


def deep(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.reliability(fault="oversized body, deeply nested JSON, wrong content type on every body route",
                         outcome="4xx with a message, logged, nothing changed")
@pytest.mark.parametrize(("kind", "where"), ROUTES_WITH_BODIES)
def test_oversized_deep_and_mistyped_bodies_are_refused(client, admin, make_agent, caplog, kind, where):
    agent = make_agent("i-0hostile")
    url, headers = target(kind, where, agent, admin)
    before = snapshot(client, admin)
    bodies = [
        ("oversized", b'{"x": "' + b"a" * (2 * 1024 * 1024) + b'"}', "application/json"),
        ("deep", ('{"notices": ' + deep(100_000) + "}").encode(), "application/json"),
        ("deep-object", ('{"params": ' + '{"a": ' * 5000 + "1" + "}" * 5000 + "}").encode(), "application/json"),
        ("text", b'{"state": "ONLINE_READY"}', "text/plain"),
        ("form", b"state=ONLINE_READY", "application/x-www-form-urlencoded"),
        ("xml", b"<heartbeat/>", "application/xml"),
        ("not-utf8", b'{"a": "\xff\xfe"}', "application/json"),
    ]
    with caplog.at_level(logging.WARNING):
        for name, body, content_type in bodies:
            response = client.post(url, content=body, headers={**headers, "content-type": content_type})
            assert 400 <= response.status_code < 500, (name, response.status_code, response.text[:300])
            assert response.json().get("detail"), name
    assert snapshot(client, admin) == before
    assert any("-> 4" in r.getMessage() for r in caplog.records)


@pytest.mark.reliability(fault="path traversal in path arguments (agent id, command id, workload, static file)",
                         outcome="4xx, no file content served")
@pytest.mark.parametrize("path", [
    "/api/v1/agent/..%2F..%2Fetc%2Fpasswd/heartbeat",
    "/api/v1/agents/..%2F..%2F..%2Fetc%2Fpasswd",
    "/api/v1/commands/..%2F..%2Fetc%2Fpasswd",
    "/api/v1/workloads/..%2F..%2Fetc%2Fpasswd/policy",
    "/static/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
    "/static/%2Fetc%2Fpasswd",
    "/static/....%2F%2F....%2F%2Fetc%2Fpasswd",
])
def test_path_traversal_is_refused(client, admin, path):
    method = client.post if path.endswith("heartbeat") else client.get
    response = method(path, headers=admin, **({"json": {}} if method == client.post else {}))
    assert 400 <= response.status_code < 500, (path, response.status_code)
    assert "root:" not in response.text


def finished(command_id: str, status: str = "succeeded", **extra: Any) -> dict[str, Any]:
    return {"results": [{"command_id": command_id, "status": status, "result": {"instance_id": "i-0new"},
                         "finished_at": "2025-01-01T12:00:00Z", **extra}]}


def issue_and_deliver(client, admin, agent) -> str:
    created = client.post("/api/v1/commands", headers=admin,
                          json={"agent_id": agent.agent_id, "type": "launch",
                                "params": {"instance_type": "m5.large", "az": "us-east-1b", "market": "spot"}})
    assert created.status_code == 201, created.text
    beat = client.post(agent.url("heartbeat"), headers=agent.headers,
                       json={"state": "ONLINE_READY", "version": "0.1.0", "instance_id": agent.instance_id})
    assert beat.status_code == 200
    return str(created.json()["command_id"])


@pytest.mark.reliability(fault="replayed command results (same and contradicting) and foreign results "
                               "(another agent's command, an autonomous result reusing a server command id)",
                         outcome="the first result stands; foreign ones 4xx; nothing changed")
def test_replayed_and_foreign_results_change_nothing(client, admin, make_agent):
    mine, other = make_agent("i-0mine", workload="w-mine"), make_agent("i-0other", workload="w-other")
    command_id = issue_and_deliver(client, admin, mine)
    first = client.post(mine.url("results"), headers=mine.headers, json=finished(command_id))
    assert first.status_code == 200 and first.json()["accepted"] == 1
    before = snapshot(client, admin)
    replay = client.post(mine.url("results"), headers=mine.headers, json=finished(command_id))
    assert replay.status_code == 200 and replay.json()["accepted"] == 0
    contradicting = client.post(mine.url("results"), headers=mine.headers,
                                json=finished(command_id, status="failed", error="x", error_code="X"))
    assert contradicting.status_code < 500 and contradicting.json().get("accepted", 0) == 0
    foreign = client.post(other.url("results"), headers=other.headers, json=finished(command_id))
    assert foreign.status_code == 403, foreign.text
    command = {"command_id": command_id, "type": "terminate", "params": {"instance_id": "i-0mine"},
               "issued_at": "2025-01-01T12:00:00Z"}
    hijack = client.post(other.url("results"), headers=other.headers,
                         json=finished(command_id, autonomous=True, command=command))
    assert 400 <= hijack.status_code < 500, hijack.text
    assert snapshot(client, admin) == before
    assert client.get(f"/api/v1/commands/{command_id}", headers=admin).json()["status"] == "succeeded"


@pytest.mark.reliability(fault="an agent acting on another workload's agent or instance (heartbeat, notices, "
                               "results, reconnect with its own secret on the other's id)",
                         outcome="401/403, nothing changed")
def test_an_agent_cannot_touch_another_workloads_data(client, admin, make_agent, reg_body):
    mine, other = make_agent("i-0mine", workload="w-mine"), make_agent("i-0other", workload="w-other")
    before = snapshot(client, admin)
    hb = {"state": "DRAINING", "version": "0.1.0", "instance_id": other.instance_id}
    attempts = [
        client.post(other.url("heartbeat"), headers=mine.headers, json=hb),
        client.post(mine.url("heartbeat"), headers=mine.headers, json=hb),
        client.post(other.url("notices"), headers=mine.headers, json={"notices": []}),
        client.post(other.url("reconnect"), headers=mine.headers, json={"metadata": reg_body(other.instance_id)[
            "metadata"], "version": "0.1.0"}),
        client.post(mine.url("notices"), headers=mine.headers, json={"notices": [{
            "notice_id": "n1", "instance_id": other.instance_id, "kind": "interruption", "payload": {},
            "detected_at": "2025-01-01T12:00:00Z"}]}),
    ]
    assert [a.status_code for a in attempts] == [401, 403, 401, 401, 403], [a.text for a in attempts]
    assert snapshot(client, admin) == before


@pytest.mark.reliability(fault="agent secret or enrollment token on the operator API; admin token on the agent API",
                         outcome="401: admin scope and agent scope are separate")
def test_scopes_are_separate(client, admin, make_agent):
    agent = make_agent("i-0scope")
    before = snapshot(client, admin)
    for headers in (agent.headers, {"Authorization": "Bearer test-enrollment-token"}):
        assert client.get("/api/v1/agents", headers=headers).status_code == 401
        assert client.post("/api/v1/tokens", headers=headers, json={"kind": "admin"}).status_code == 401
        assert client.post("/api/v1/commands", headers=headers, json={
            "agent_id": agent.agent_id, "type": "collect_inventory", "params": {}}).status_code == 401
    hb = {"state": "ONLINE_READY", "version": "0.1.0", "instance_id": agent.instance_id}
    assert client.post(agent.url("heartbeat"), headers=admin, json=hb).status_code == 401
    assert snapshot(client, admin) == before


@pytest.mark.reliability(fault="tokens at rest and in comparison",
                         outcome="random 256-bit tokens, only sha256 hashes stored, compared with hmac.compare_digest")
def test_tokens_are_random_hashed_and_compared_in_constant_time(client, admin, db_url, monkeypatch):
    made = [client.post("/api/v1/tokens", headers=admin, json={"kind": "admin"}).json()["token"] for _ in range(5)]
    assert len(set(made)) == 5 and all(len(t) >= 43 for t in made)
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            stored = [r[0] for r in conn.execute(text("SELECT token_hash FROM tokens"))]
            dump = " ".join(str(v) for row in conn.execute(text("SELECT * FROM tokens")) for v in row)
    finally:
        engine.dispose()
    for plain in made:
        assert plain not in dump
        assert hashlib.sha256(plain.encode()).hexdigest() in stored
    import hmac

    from spot_optimizer.server.services import security

    calls = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append(1)
        return real(a, b)

    monkeypatch.setattr(security.hmac, "compare_digest", spy)
    assert client.get("/api/v1/agents", headers={"Authorization": f"Bearer {made[0]}"}).status_code == 200
    assert calls


@pytest.mark.reliability(fault="a revoked admin or enrollment token",
                         outcome="DELETE /api/v1/tokens/{id} -> 204; the token is refused at once (401)")
def test_tokens_are_revocable(client, admin, reg_body):
    new = client.post("/api/v1/tokens", headers=admin, json={"kind": "admin", "note": "to revoke"}).json()
    enrol = client.post("/api/v1/tokens", headers=admin, json={"kind": "enrollment"}).json()
    bearer = {"Authorization": f"Bearer {new['token']}"}
    assert client.get("/api/v1/agents", headers=bearer).status_code == 200
    assert client.delete(f"/api/v1/tokens/{new['id']}", headers=admin).status_code == 204
    assert client.get("/api/v1/agents", headers=bearer).status_code == 401
    assert client.delete(f"/api/v1/tokens/{enrol['id']}", headers=bearer).status_code == 401
    assert client.delete(f"/api/v1/tokens/{enrol['id']}", headers=admin).status_code == 204
    refused = client.post("/api/v1/agent/register", json={**reg_body("i-0late"), "enrollment_token": enrol["token"]})
    assert refused.status_code == 401
    assert client.delete("/api/v1/tokens/999999", headers=admin).status_code == 404
    assert client.delete("/api/v1/tokens/1", headers={}).status_code == 401
