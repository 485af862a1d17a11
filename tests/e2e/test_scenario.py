"""Every flow of the demo scenario on the emulated region with real processes, asserted from the operator
API and from EC2 (moto): roles by tags, instance states, no duplicate launches, every command finished.
The server is killed (SIGKILL) and restarted in the middle of the scenario."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from spot_optimizer.core.models import MANAGED_BY_KEY, REQUEST_ID_TAG, ROLE_TAG, WORKLOAD_TAG
from spot_optimizer.demo.scenario import AGENT_ARGS, SERVER_FLAGS, Scenario
from spot_optimizer.demo.stack import LocalStack, wait_for

pytestmark = pytest.mark.e2e
ROUTINE = {"collect_prices", "collect_inventory"}


@pytest.fixture(scope="module")
def played(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalStack, Scenario, list[str]]]:
    tmp: Path = tmp_path_factory.mktemp("scenario")
    restarts: list[str] = []
    with LocalStack(tmp, workloads=3, seed=7, speed=10.0, server_flags=SERVER_FLAGS, agent_args=AGENT_ARGS) as stack:
        for instance_id in stack.region.seed.primaries.values():
            stack.wait_agent(instance_id, timeout_s=90)
        itype = stack.describe(next(iter(stack.region.seed.primaries.values())))["InstanceType"]

        def restart_server_mid_scenario(step: str) -> None:
            if step.startswith("3."):
                stack.server.kill9()
                time.sleep(2)  # agents see the server gone (their outbox keeps what they report)
                stack.restart_server()
                restarts.append(step)

        scenario = Scenario(stack, Console(file=(tmp / "console.txt").open("w")), time.monotonic() + 420,
                            list(stack.region.seed.primaries), itype, between_steps=restart_server_mid_scenario)
        scenario.run()
        yield stack, scenario, restarts


def managed_instances(stack: LocalStack) -> list[dict[str, Any]]:
    ec2 = stack.region.moto_client("ec2")
    found = ec2.describe_instances(Filters=[{"Name": f"tag:{MANAGED_BY_KEY}", "Values": ["SpotOptimizer"]}])
    return [i for r in found["Reservations"] for i in r["Instances"]]


def tag(instance: dict[str, Any], key: str) -> str | None:
    return next((t["Value"] for t in instance.get("Tags", []) if t["Key"] == key), None)


@pytest.mark.parametrize("step", [
    "1. price move -> switch",
    "2. rebalance recommendation -> replica",
    "3. interruption notice -> promotion, no downtime",
    "4. capacity error -> next pool",
    "5. on-demand fallback -> return to spot",
    "6. zombies terminated",
])
def test_each_flow_happens(played: tuple[LocalStack, Scenario, list[str]], step: str) -> None:
    _, scenario, restarts = played
    assert restarts == ["3. interruption notice -> promotion, no downtime"]
    result = next(r for r in scenario.results if r.name == step)
    assert result.ok, result.detail


def test_roles_by_tags_one_primary_per_workload(played: tuple[LocalStack, Scenario, list[str]]) -> None:
    stack, scenario, _ = played
    running = [i for i in managed_instances(stack) if i["State"]["Name"] == "running"]
    for workload in scenario.workloads:
        roles = sorted(tag(i, ROLE_TAG) or "" for i in running if tag(i, WORKLOAD_TAG) == workload)
        assert roles.count("primary") == 1, (workload, roles)
        assert "zombie" not in roles, (workload, roles)


def test_no_duplicate_launches(played: tuple[LocalStack, Scenario, list[str]]) -> None:
    stack, _, _ = played
    launches = [c for c in stack.op.get("/commands", status="succeeded") if c["type"] == "launch"]
    assert launches
    by_request: dict[str, int] = {}
    for instance in managed_instances(stack):
        request = tag(instance, REQUEST_ID_TAG)
        if request:
            by_request[request] = by_request.get(request, 0) + 1
    assert all(count == 1 for count in by_request.values()), by_request
    assert {c["command_id"] for c in launches} <= set(by_request)
    seeded = len(stack.region.seed.primaries)
    assert len(managed_instances(stack)) == seeded + len(by_request)


def test_every_command_finished(played: tuple[LocalStack, Scenario, list[str]]) -> None:
    stack, _, _ = played
    cutoff = datetime.now(UTC).timestamp() - 30  # routine collections keep being issued; older ones are done

    def open_commands() -> list[dict[str, Any]]:
        rows = stack.op.get("/commands", limit=10000)
        return [c for c in rows if c["status"] in ("pending", "delivered") and (
            c["type"] not in ROUTINE or datetime.fromisoformat(c["issued_at"].replace("Z", "+00:00")).replace(
                tzinfo=UTC).timestamp() < cutoff)]

    try:
        wait_for("every command finished", lambda: not open_commands(), timeout_s=45)
    except TimeoutError:
        still = [(c["type"], c["status"], c["agent_id"], c["reason"]) for c in open_commands()]
        pytest.fail(f"commands still open: {still}")
    assert not [c for c in stack.op.get("/commands", status="expired") if c["type"] not in ROUTINE]


def test_server_view_matches_ec2_after_restart(played: tuple[LocalStack, Scenario, list[str]]) -> None:
    stack, _, _ = played
    truth = {i["InstanceId"]: (i["State"]["Name"], tag(i, ROLE_TAG)) for i in managed_instances(stack)
             if i["State"]["Name"] == "running"}

    def server_view() -> dict[str, tuple[str, str | None]] | None:
        rows = {i["instance_id"]: (i["state"], i["role"]) for i in stack.op.get("/instances")}
        view = {k: rows.get(k) for k in truth}
        return view if view == truth else None

    assert wait_for("server's instances agree with EC2 tags", server_view, timeout_s=30) == truth
    notices = stack.op.get("/notices")
    assert {n["kind"] for n in notices} >= {"rebalance", "interruption"}
