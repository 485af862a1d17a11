"""The operator CLI and `spot-optimizer server` as real processes, on both databases."""

from __future__ import annotations

import json

import httpx

from spot_optimizer.core.protocol import API_PREFIX


def test_operator_cli_against_a_running_server(live_server, cli_env, run_cli, reg_body):
    registered = httpx.post(live_server.url + API_PREFIX + "/register", json=reg_body("i-0cli", "web")).json()
    agent_id, secret = registered["agent_id"], registered["agent_secret"]

    out = run_cli("agents", "--json", env=cli_env)
    assert out.returncode == 0, out.stderr
    agents = json.loads(out.stdout)
    assert [(a["agent_id"], a["instance_id"], a["workload"], a["state"]) for a in agents] == [
        (agent_id, "i-0cli", "web", "ONLINE_READY")
    ]
    assert {"role", "last_heartbeat", "toggles"} <= set(agents[0])

    out = run_cli(
        "command",
        "launch",
        "--agent",
        agent_id,
        "--instance-type",
        "m5.large",
        "--az",
        "us-east-1b",
        "--market",
        "on-demand",
        "--json",
        env=cli_env,
    )
    assert out.returncode == 0, out.stderr
    launched = json.loads(out.stdout)
    assert launched["status"] == "pending" and len(launched["command_id"]) == 32

    hb = httpx.post(
        f"{live_server.url}{API_PREFIX}/{agent_id}/heartbeat",
        json={"state": "ONLINE_READY", "instance_id": "i-0cli", "version": "0.1.0"},
        headers={"Authorization": f"Bearer {secret}"},
    ).json()
    assert [c["command_id"] for c in hb["commands"]] == [launched["command_id"]]
    result = {
        "command_id": launched["command_id"],
        "status": "succeeded",
        "finished_at": "2025-01-01T12:00:00Z",
        "result": {"instance_id": "i-0new"},
    }
    httpx.post(
        f"{live_server.url}{API_PREFIX}/{agent_id}/results",
        json={"results": [result]},
        headers={"Authorization": f"Bearer {secret}"},
    )

    out = run_cli("commands", "--json", env=cli_env)
    assert out.returncode == 0, out.stderr
    assert [(c["command_id"], c["agent_id"], c["type"], c["status"], c["result"]) for c in json.loads(out.stdout)] == [
        (launched["command_id"], agent_id, "launch", "succeeded", {"instance_id": "i-0new"})
    ]

    out = run_cli("command", "terminate", "--agent", agent_id, "--instance-id", "i-0unknown", env=cli_env)
    assert out.returncode == 1
    assert "409" in out.stderr and "i-0unknown" in out.stderr

    out = run_cli("toggle", agent_id, "--auto-switching", "on", "--emergency-only", "off", env=cli_env)
    assert out.returncode == 0, out.stderr
    out = run_cli("agents", "--json", env=cli_env)
    assert json.loads(out.stdout)[0]["toggles"]["auto_switching"] is True
    assert run_cli("toggle", agent_id, "--auto-switching", "maybe", env=cli_env).returncode != 0

    out = run_cli("events", "--json", "--workload", "web", "--since", "2000-01-01T00:00:00Z", env=cli_env)
    assert out.returncode == 0, out.stderr
    kinds = [e["kind"] for e in json.loads(out.stdout)]
    assert kinds[:2] == ["agent_registered", "command_issued"] and "toggles_changed" in kinds
    assert json.loads(run_cli("events", "--json", "--workload", "other", env=cli_env).stdout) == []

    table = run_cli("agents", env={**cli_env, "COLUMNS": "300"})
    assert table.returncode == 0 and agent_id[:8] in table.stdout

    out = run_cli("token", "create", "--kind", "enrollment", "--server", live_server.url, env=cli_env)
    assert out.returncode == 0, out.stderr
    body = reg_body("i-0cli2")
    body["enrollment_token"] = out.stdout.strip()
    assert httpx.post(live_server.url + API_PREFIX + "/register", json=body).status_code == 200

    wrong = run_cli("agents", "--json", env={**cli_env, "SPOT_OPTIMIZER_TOKEN": "wrong"})
    assert wrong.returncode == 1 and "401" in wrong.stderr and "admin token is not valid" in wrong.stderr
    assert "wrong" not in live_server.log.read_text()


def test_operator_cli_reports_an_unreachable_server(run_cli):
    out = run_cli("agents", "--json", "--server", "http://127.0.0.1:9", "--token", "t")
    assert out.returncode == 2
    assert "cannot reach the server at http://127.0.0.1:9" in out.stderr
    out = run_cli("commands", "--server", "http://127.0.0.1:9", env={"PATH": "/usr/bin", "HOME": "/tmp"})
    assert out.returncode == 2 and "no admin token" in out.stderr


def test_token_create_offline_and_db_upgrade(db_url, run_cli, reg_body, server_settings):
    assert run_cli("db", "upgrade", "--db", db_url).returncode == 0
    out = run_cli("token", "create", "--kind", "admin", "--db", db_url)
    assert out.returncode == 0, out.stderr
    token = out.stdout.strip()
    from fastapi.testclient import TestClient

    from spot_optimizer.server.app import create_app

    with TestClient(create_app(server_settings)) as client:
        assert client.get("/api/v1/agents", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert run_cli("token", "create", "--kind", "root", "--db", db_url).returncode != 0
