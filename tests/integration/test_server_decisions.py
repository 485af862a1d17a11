"""The server's decision loop on both databases: notices and capacity errors become commands through the
operator's command service, nothing is issued twice, decisions are stored with their rationale, prices
and inventory are kept fresh, and only the leader runs the loop. The loop is driven by calling
`run_decisions_once(app)` with the fake clock; the background task is off (`decision_interval_s=0`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from spot_optimizer.core.models import Notice, NoticeKind
from spot_optimizer.server.decisions.loop import LoopRun, run_decisions_once

REGION = "us-east-1"
OD_PRICE = 0.096
COLLECT = ("collect_prices", "collect_inventory")


@pytest.fixture
def server_settings(server_settings: Any) -> Any:
    """conftest's settings with the background loop off: each test runs the passes itself."""
    return dataclasses.replace(server_settings, decision_interval_s=0)


def pool(az: str, market: str = "spot", itype: str = "m5.large") -> str:
    return f"{REGION}/{itype}/{az}/{market}"


def record(instance_id: str, role: str, az: str, launched: str = "2025-01-01T10:00:00+00:00",
           state: str = "running") -> dict[str, Any]:
    return {
        "instance_id": instance_id, "state": state, "az": az, "instance_type": "m5.large", "pool": pool(az),
        "market": "spot", "launch_time": launched,
        "tags": {"ManagedBy": "SpotOptimizer", "SpotOptimizer:Role": role, "SpotOptimizer:Workload": "web"},
    }


@dataclass
class World:
    client: TestClient
    admin: dict[str, str]
    app: FastAPI
    clock: Any
    primary: Any

    def post(self, what: str, body: dict[str, Any]) -> Any:
        response = self.client.post(self.primary.url(what), json=body, headers=self.primary.headers)
        assert response.status_code == 200, response.text
        return response.json()

    def prices(self, **by_az: float) -> None:
        stamp = self.clock().isoformat()
        spot = [{"instance_type": "m5.large", "az": f"{REGION}{az}", "price": p, "timestamp": stamp}
                for az, p in by_az.items()]
        self.post("prices", {"spot": spot, "ondemand": [
            {"instance_type": "m5.large", "region": REGION, "price": OD_PRICE}]})

    def inventory(self, *records: dict[str, Any]) -> None:
        self.post("inventory", {"instances": [record("i-primary", "primary", "us-east-1a"), *records]})

    def notice(self, kind: str = "interruption", instance_id: str = "i-primary") -> None:
        payload = {"action": "terminate", "time": "2025-01-01T12:02:00Z", "kind": kind}
        self.post("notices", {"notices": [{
            "notice_id": Notice.make_id(NoticeKind(kind), instance_id, payload), "kind": kind,
            "instance_id": instance_id, "payload": payload, "detected_at": self.clock().isoformat(),
        }]})

    def result(self, command_id: str, status: str = "succeeded", **extra: Any) -> None:
        ack = self.post("results", {"results": [{
            "command_id": command_id, "status": status, "finished_at": self.clock().isoformat(), **extra}]})
        assert ack["accepted"] == 1

    def heartbeat(self) -> Any:
        """The primary's agent heartbeats; returns the answer (its commands)."""
        return self.post("heartbeat", {"state": "ONLINE_READY", "version": "0.1.0", "instance_id": "i-primary",
                                       "role": "primary"})

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.heartbeat()  # the primary's agent stays online

    def run(self) -> LoopRun:
        return run_decisions_once(self.app)

    def get(self, path: str, **params: Any) -> Any:
        response = self.client.get(f"/api/v1{path}", params=params, headers=self.admin)
        assert response.status_code == 200, response.text
        return response.json()

    def commands(self, *, engine_only: bool = True) -> list[dict[str, Any]]:
        rows = self.get("/commands", workload="web")
        return [c for c in rows if not engine_only or c["type"] not in COLLECT]


@pytest.fixture
def world(client: TestClient, admin: dict[str, str], server_app: FastAPI, clock: Any, make_agent: Any) -> World:
    agent = make_agent("i-primary", workload="web", role="primary")
    w = World(client, admin, server_app, clock, agent)
    w.prices(a=0.030, b=0.035, c=0.040)
    return w


def only(rows: list[dict[str, Any]]) -> dict[str, Any]:
    assert len(rows) == 1, rows
    return rows[0]


def test_interruption_with_a_ready_replica_promotes_it(world: World) -> None:
    world.inventory(record("i-replica", "replica", "us-east-1b"))
    world.notice()
    run = world.run()
    promote = only(world.commands())
    assert (promote["type"], promote["params"]) == (
        "promote", {"instance_id": "i-replica", "old_instance_id": "i-primary"})
    assert promote["agent_id"] == world.primary.agent_id  # the dying primary's agent still lives
    assert promote["source"] == "engine" and "interruption notice" in promote["reason"]
    assert promote["command_id"] in run.commands
    # The agent carries it out: the roles swap at once, without waiting for an inventory report.
    world.result(promote["command_id"], result={"primary": "i-replica", "zombie": "i-primary"})
    roles = {i["instance_id"]: i["role"] for i in world.get("/instances", workload="web")}
    assert roles == {"i-replica": "primary", "i-primary": "zombie"}


def test_interruption_without_a_replica_launches_in_another_pool(world: World) -> None:
    world.inventory()
    world.notice()
    world.run()
    launch = only(world.commands())
    assert launch["type"] == "launch"
    assert {k: launch["params"][k] for k in ("instance_type", "az", "market", "role", "workload")} == {
        "instance_type": "m5.large", "az": "us-east-1b", "market": "spot", "role": "primary", "workload": "web"}
    assert launch["params"]["max_price"] == pytest.approx(0.8 * OD_PRICE)
    roles = {i["instance_id"]: i["role"] for i in world.get("/instances", workload="web")}
    assert roles == {"i-primary": "zombie"}  # demoted by the server: it dies within two minutes


def test_capacity_errors_move_the_launch_pool_by_pool_and_to_on_demand_last(world: World) -> None:
    world.inventory()
    world.notice()
    tried = []
    for _ in range(3):
        world.run()
        launch = [c for c in world.commands() if c["type"] == "launch" and c["status"] == "pending"]
        params = only(launch)["params"]
        tried.append((params["az"], params["market"]))
        if params["market"] == "spot":
            world.advance(5)
            world.result(only(launch)["command_id"], "failed", error="no capacity",
                         error_code="InsufficientInstanceCapacity", result={"pool": pool(params["az"])})
    assert tried == [("us-east-1b", "spot"), ("us-east-1c", "spot"), ("us-east-1a", "on-demand")]
    kinds = [d["actions"][-1]["kind"] for d in world.get("/decisions", workload="web")]
    assert kinds[0] == "fallback_to_on_demand"  # newest first


def test_rebalance_starts_a_replica_in_another_pool(world: World) -> None:
    world.inventory()
    world.notice("rebalance")
    world.run()
    launch = only(world.commands())
    assert launch["type"] == "launch"
    assert (launch["params"]["role"], launch["params"]["az"], launch["params"]["market"]) == (
        "replica", "us-east-1b", "spot")
    assert "rebalance" in launch["reason"]


def test_no_switch_without_auto_switching_and_a_move_with_it(world: World) -> None:
    world.advance(60)
    world.prices(a=0.070, b=0.020, c=0.060)  # the primary's pool became expensive
    world.inventory()
    world.run()
    assert world.commands() == []
    decision = world.get("/decisions", workload="web")[0]
    assert decision["actions"][0]["kind"] == "nothing"
    response = world.client.patch(f"/api/v1/agents/{world.primary.agent_id}/toggles",
                                  json={"auto_switching": True}, headers=world.admin)
    assert response.status_code == 200
    world.advance(10)
    world.run()
    launch = only(world.commands())
    assert (launch["type"], launch["params"]["role"], launch["params"]["az"]) == ("launch", "replica", "us-east-1b")


def test_the_same_state_twice_issues_nothing_twice(world: World) -> None:
    world.inventory()
    world.notice()
    first = world.run()
    world.advance(10)
    second = world.run()
    assert len(first.decisions) == 1 and second.decisions == [] and second.commands == []
    launch = only(world.commands())
    assert len(world.commands(engine_only=False)) == 3  # the launch and one collect of each kind
    # The launch succeeds: the new primary shows up at once and nothing is launched again.
    world.result(launch["command_id"], result={"instance_id": "i-new", "pool": pool("us-east-1b"),
                                               "state": "pending"})
    new = {i["instance_id"]: i for i in world.get("/instances", workload="web")}["i-new"]
    assert (new["role"], new["pool"], new["state"], new["managed"]) == ("primary", pool("us-east-1b"), "pending", True)
    world.advance(10)
    world.run()
    world.advance(10)
    world.run()
    engine = world.commands()
    assert [c["type"] for c in engine] == ["launch", "promote"]
    # ... only the retag of the old primary: the new primary is promoted over it, which tags it zombie.
    assert engine[1]["params"] == {"instance_id": "i-new", "old_instance_id": "i-primary"}
    assert engine[1]["reason"].startswith("retag:")


def test_a_booting_replica_is_promoted_once_it_is_ready(world: World) -> None:
    world.inventory(record("i-replica", "replica", "us-east-1b", launched=world.clock().isoformat()))
    world.notice()
    world.run()
    assert world.commands() == []  # the replica boots: no second launch, wait for it
    world.advance(200)  # more than the boot time
    world.run()
    promote = only(world.commands())
    assert (promote["type"], promote["params"]["instance_id"]) == ("promote", "i-replica")


def test_decisions_are_stored_with_their_rationale(world: World) -> None:
    world.inventory(record("i-replica", "replica", "us-east-1b"))
    world.notice()
    run = world.run()
    decision = only(world.get("/decisions", workload="web"))
    assert decision["decision_id"] == run.decisions[0].decision_id
    action = decision["actions"][0]
    assert (action["kind"], action["trigger"], action["outcome"]) == ("promote", "interruption", "issued")
    assert decision["rationale"][0]["text"] == "interruption notice: promote the ready replica, no downtime"
    assert decision["rationale"][0]["numbers"]["replica_pool"] == pool("us-east-1b")
    event = only(world.get("/events", workload="web", kind="decision"))
    assert "interruption notice: promote the ready replica" in event["message"]


def test_prices_and_inventory_are_collected_at_their_cadence(world: World) -> None:
    def collects() -> list[tuple[str, dict[str, Any]]]:
        return sorted((c["type"], c["params"]) for c in world.commands(engine_only=False) if c["type"] in COLLECT)

    world.inventory()
    world.run()
    assert collects() == [("collect_inventory", {}), ("collect_prices", {"instance_types": ["m5.large"]})]
    assert {c["agent_id"] for c in world.commands(engine_only=False)} == {world.primary.agent_id}
    world.advance(10)
    world.run()
    assert len(collects()) == 2
    world.advance(25)  # 35 s: the inventory is due, the prices are not ...
    world.run()
    assert len(collects()) == 2  # ... but the first request is still open: no second one
    for command in world.commands(engine_only=False):
        world.result(command["command_id"])
    world.run()
    assert [t for t, _ in collects()] == ["collect_inventory", "collect_inventory", "collect_prices"]
    world.advance(30)
    world.run()
    assert [t for t, _ in collects()].count("collect_prices") == 2


def test_workload_policy_limits_the_pools(world: World) -> None:
    world.inventory()
    default = world.get("/workloads/web/policy")
    assert (default["instance_types"], default["azs"]) == (["m5.large"], ["us-east-1a", "us-east-1b", "us-east-1c"])
    body = {"instance_types": ["m5.large"], "azs": ["us-east-1a", "us-east-1c"], "settings": {"boot_time_s": 60}}
    put = world.client.put("/api/v1/workloads/web/policy", json=body, headers=world.admin)
    assert put.status_code == 200, put.text
    assert put.json()["azs"] == ["us-east-1a", "us-east-1c"] and put.json()["settings"]["boot_time_s"] == 60
    bad = world.client.put("/api/v1/workloads/web/policy", json={"settings": {"boot_time_s": -1}},
                           headers=world.admin)
    assert bad.status_code == 422 and "boot_time_s" in bad.json()["detail"]
    missing = world.client.put("/api/v1/workloads/nope/policy", json={}, headers=world.admin)
    assert missing.status_code == 404
    world.notice()
    world.run()
    assert only(world.commands())["params"]["az"] == "us-east-1c"  # b is cheaper but not allowed


def test_a_second_process_does_not_run_the_loop_while_the_lease_is_held(
    world: World, db_url: str, clock: Any
) -> None:
    if db_url.startswith("sqlite"):
        pytest.skip("SQLite is one server process by design: it takes the lease")
    from spot_optimizer.server.app import create_app
    from spot_optimizer.server.settings import ServerSettings

    other = create_app(ServerSettings(db_url=db_url, sweep_interval_s=0, decision_interval_s=0,
                                      leader_lease_s=30, clock=clock))
    world.inventory()
    world.notice()
    assert world.run().leader
    count = len(world.commands(engine_only=False))
    world.advance(10)
    assert not run_decisions_once(other).leader
    assert len(world.commands(engine_only=False)) == count
    world.advance(25)  # the first process stopped renewing: its lease ran out
    assert run_decisions_once(other).leader
    assert not world.run().leader


def test_a_command_left_with_a_dead_agent_moves_to_a_live_agent_of_the_workload(
    world: World, make_agent: Any
) -> None:
    """The interrupted primary's agent dies with its instance: what it was given must still happen."""
    replica_agent = make_agent("i-replica", workload="web", role="replica")
    world.inventory(record("i-replica", "replica", "us-east-1b"))
    command = world.client.post("/api/v1/commands", headers=world.admin, json={
        "agent_id": world.primary.agent_id, "type": "promote", "params": {"instance_id": "i-replica"}}).json()
    world.heartbeat()  # leased to the primary's agent, which then dies
    beat = {"state": "ONLINE_READY", "version": "0.1.0", "instance_id": "i-replica", "role": "replica"}
    for _ in range(20):  # only the replica's agent keeps heartbeating
        world.clock.advance(5)
        world.client.post(replica_agent.url("heartbeat"), json=beat, headers=replica_agent.headers)
        world.run()
    row = world.get(f"/commands/{command['command_id']}")
    assert row["agent_id"] == replica_agent.agent_id
    assert row["params"]["old_instance_id"] == "i-primary"  # the promote keeps its meaning
    assert row["status"] == "delivered" and row["delivery_count"] >= 2  # to the dead agent, then here
    assert any(e["kind"] == "command_reassigned" for e in world.get("/events"))


def test_on_a_notice_the_launch_is_delivered_before_the_collections(world: World) -> None:
    """An agent runs its commands in order: a launch behind a price and inventory sweep would wait for both."""
    world.inventory()
    world.notice()
    world.run()  # the first pass also finds both collections due
    assert sorted(c["type"] for c in world.commands(engine_only=False)) == [
        "collect_inventory", "collect_prices", "launch"]
    beat = world.heartbeat()
    assert [c["type"] for c in beat["commands"]][0] == "launch"
    assert [c["delivery"] for c in beat["commands"]] == [1, 1, 1]


def test_commands_issued_together_are_delivered_promote_launch_terminate_then_collections(world: World) -> None:
    world.inventory(record("i-replica", "replica", "us-east-1b"), record("i-old", "zombie", "us-east-1c"))
    agent = world.primary.agent_id
    for type_, params in (("collect_inventory", {}), ("terminate", {"instance_id": "i-old"}),
                          ("launch", {"instance_type": "m5.large", "az": "us-east-1c"}),
                          ("promote", {"instance_id": "i-replica"})):  # issued in the worst order, same instant
        response = world.client.post("/api/v1/commands", headers=world.admin,
                                     json={"agent_id": agent, "type": type_, "params": params})
        assert response.status_code in (200, 201), response.text
    beat = world.heartbeat()
    assert [c["type"] for c in beat["commands"]] == ["promote", "launch", "terminate", "collect_inventory"]


def test_an_inventory_taken_before_a_promotion_does_not_undo_it(world: World) -> None:
    """Collections run beside moves: a listing that began before the promotion's tags were written arrives
    after its result, with the old tags. The newer knowledge stays."""
    world.inventory(record("i-replica", "replica", "us-east-1b"))
    command = world.client.post("/api/v1/commands", headers=world.admin, json={
        "agent_id": world.primary.agent_id, "type": "promote",
        "params": {"instance_id": "i-replica", "old_instance_id": "i-primary"}}).json()
    listing_began = world.clock().isoformat()
    world.advance(2)
    world.result(command["command_id"], result={"primary": "i-replica", "zombie": "i-primary"})
    stale = [record("i-primary", "primary", "us-east-1a"), record("i-replica", "replica", "us-east-1b")]
    world.post("inventory", {"instances": stale, "collected_at": listing_began})
    roles = {i["instance_id"]: i["role"] for i in world.get("/instances", workload="web")}
    assert roles == {"i-primary": "zombie", "i-replica": "primary"}
    world.advance(2)  # a listing taken after the promotion is applied as usual
    fresh = [{**record("i-replica", "primary", "us-east-1b"), "state": "stopped"}]
    world.post("inventory", {"instances": fresh, "collected_at": world.clock().isoformat()})
    assert {i["instance_id"]: i["state"] for i in world.get("/instances", workload="web")}["i-replica"] == "stopped"


def test_collections_go_to_an_agent_that_is_not_being_interrupted(world: World, make_agent: Any) -> None:
    """Nor to a zombie's agent (registered before the replica's here): it is about to be terminated."""
    make_agent("i-zombie", workload="web", role="zombie")
    replica_agent = make_agent("i-replica", workload="web", role="replica")
    world.inventory(record("i-replica", "replica", "us-east-1b"), record("i-zombie", "zombie", "us-east-1c"))
    world.notice()
    world.run()
    by_type = {c["type"]: c["agent_id"] for c in world.commands(engine_only=False)}
    assert by_type["promote"] == world.primary.agent_id  # the move goes through the primary, as before
    assert by_type["collect_prices"] == by_type["collect_inventory"] == replica_agent.agent_id


def test_one_inventory_sweep_per_region_whatever_the_number_of_workloads(world: World, make_agent: Any) -> None:
    """An inventory lists the whole region: one per cadence is enough for every workload in it."""
    others = [make_agent(f"i-other{n}", workload=f"api{n}", role="primary") for n in range(3)]
    world.inventory(*[{**record(a.instance_id, "primary", "us-east-1a"),
                       "tags": {"ManagedBy": "SpotOptimizer", "SpotOptimizer:Role": "primary",
                                "SpotOptimizer:Workload": a.workload}} for a in others])
    world.run()
    issued = world.get("/commands")
    assert [c["type"] for c in issued].count("collect_inventory") == 1
    assert {c["workload"] for c in issued if c["type"] == "collect_prices"} == {"web", "api0", "api1", "api2"}
    for command in issued:  # all done; within the cadence still nothing new
        agent = next(a for a in [world.primary, *others] if a.agent_id == command["agent_id"])
        world.client.post(agent.url("results"), headers=agent.headers, json={"results": [{
            "command_id": command["command_id"], "status": "succeeded", "finished_at": world.clock().isoformat()}]})
    def advance(seconds: float) -> None:
        world.clock.advance(seconds)
        for a in [world.primary, *others]:  # every agent stays online
            world.client.post(a.url("heartbeat"), headers=a.headers, json={
                "state": "ONLINE_READY", "version": "0.1.0", "instance_id": a.instance_id, "role": "primary"})

    advance(10)
    world.run()
    assert [c["type"] for c in world.get("/commands")].count("collect_inventory") == 1
    advance(10)
    advance(15)  # past the 30 s inventory cadence
    world.run()
    assert [c["type"] for c in world.get("/commands")].count("collect_inventory") == 2


def test_a_notice_is_answered_once_its_decision_is_made(server_settings: Any) -> None:
    """With the background loop running, the notice POST returns after the pass it woke: the agent's next
    heartbeat (sent right after the answer) carries the launch."""
    from spot_optimizer.server.app import create_app

    app = create_app(dataclasses.replace(server_settings, decision_interval_s=3600))  # only wake-ups run
    with TestClient(app) as client:
        body = {"enrollment_token": "test-enrollment-token", "version": "0.1.0", "workload": "web",
                "role": "primary", "metadata": {"instance_id": "i-primary", "instance_type": "m5.large",
                                                "availability_zone": "us-east-1a", "region": REGION,
                                                "ami_id": "ami-12345678", "lifecycle": "spot"}}
        reg = client.post("/api/v1/agent/register", json=body).json()
        headers = {"Authorization": f"Bearer {reg['agent_secret']}"}
        base = f"/api/v1/agent/{reg['agent_id']}"
        stamp = server_settings.clock().isoformat()
        client.post(f"{base}/prices", headers=headers, json={"spot": [
            {"instance_type": "m5.large", "az": f"{REGION}{az}", "price": p, "timestamp": stamp}
            for az, p in (("a", 0.03), ("b", 0.035))], "ondemand": [
            {"instance_type": "m5.large", "region": REGION, "price": OD_PRICE}]})
        client.post(f"{base}/inventory", headers=headers,
                    json={"instances": [record("i-primary", "primary", "us-east-1a")]})
        payload = {"action": "terminate", "time": "2025-01-01T12:02:00Z"}
        answer = client.post(f"{base}/notices", headers=headers, json={"notices": [{
            "notice_id": Notice.make_id(NoticeKind.INTERRUPTION, "i-primary", payload), "kind": "interruption",
            "instance_id": "i-primary", "payload": payload, "detected_at": stamp}]})
        assert answer.status_code == 200
        beat = client.post(f"{base}/heartbeat", headers=headers, json={
            "state": "DRAINING", "version": "0.1.0", "instance_id": "i-primary", "role": "primary"}).json()
        assert "launch" in [c["type"] for c in beat["commands"]]
