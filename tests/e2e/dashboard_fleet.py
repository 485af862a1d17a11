"""Where the dashboard tests get a fleet to look at, behind one interface (`DashboardFleet`):

- `EmulatedFleet`: a `LocalStack` (a real server process, the emulated region on moto, a real agent
  process per running instance). Roles come from real launches and promotions (EC2 tags), toggles are
  read back from the agent's own config file, commands are carried out by the agents.
- `SimulatedFleet`: the agent API spoken over HTTP by the test itself, as agents would (register with the
  enrollment token, heartbeat, report prices, inventory, notices and command results). Only for what the
  emulated region cannot show (see its use in test_dashboard.py).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import httpx

from helpers.procs import ADMIN, ENROLL, Operator, wait_for
from spot_optimizer.core.models import Notice, NoticeKind, Role
from spot_optimizer.demo.stack import LocalStack

REGION = "us-east-1"
ON_DEMAND = {"m5.large": (0.096, False), "c5.xlarge": (0.17, True)}  # price, estimated


class DashboardFleet(Protocol):
    workload: str  # has a primary, a replica and a zombie
    other_workload: str
    primary_agent: str
    replica_agent: str
    replica_instance: str
    primary_instance: str
    zombie_instance: str

    def populate(self) -> None: ...

    def toggles_seen_by_agent(self, agent_id: str) -> dict[str, bool]:
        """What the agent got from the server at its latest heartbeat after this call."""
        ...

    def finish_command(self, agent_id: str, command_id: str) -> None:
        """Let the agent receive the command and report its result."""
        ...


@dataclass
class SimAgent:
    http: httpx.Client
    agent_id: str
    secret: str
    instance_id: str
    role: str | None
    lifecycle: str

    def post(self, what: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self.http.post(f"/api/v1/agent/{self.agent_id}/{what}", json=body,
                                  headers={"Authorization": f"Bearer {self.secret}"})
        assert response.status_code == 200, f"{what}: {response.status_code} {response.text}"
        return dict(response.json())

    def heartbeat(self) -> dict[str, Any]:
        body: dict[str, Any] = {"state": "ONLINE_READY", "instance_id": self.instance_id, "version": "0.1.0"}
        if self.role:
            body["role"] = self.role
        return self.post("heartbeat", body)


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def store_decision(db_url: str, workload: str, region: str, primary: str, az: str, now: datetime) -> None:
    """One decision with its rationale, stored as the decision loop stores it (the loop is off in these tests:
    see test_dashboard.py)."""
    from spot_optimizer.server.db import make_engine, make_session_factory
    from spot_optimizer.server.services.decisions import record_decision

    engine = make_engine(db_url)
    try:
        with make_session_factory(engine)() as session:
            record_decision(
                session, workload=workload, now=now,
                actions=[{"type": "launch", "pool": f"{region}/m5.large/{az}/spot", "role": "replica"}],
                rationale=[f"rebalance recommendation for {primary}: start a replica in another pool",
                           f"{az} is the cheapest safe pool at $0.0340/h (on-demand $0.0960/h)"],
            )
    finally:
        engine.dispose()


@dataclass
class SimulatedFleet:
    url: str
    db_url: str | None = None  # to store a decision as the decision loop would
    workload: str = "web"
    other_workload: str = "batch"
    agents: dict[str, SimAgent] = field(default_factory=dict)
    primary_instance: str = "i-0a000000000000001"
    replica_instance: str = "i-0b000000000000002"
    zombie_instance: str = "i-0c000000000000003"
    batch_instance: str = "i-0d000000000000004"

    def __post_init__(self) -> None:
        self.http = httpx.Client(base_url=self.url, timeout=10)
        self.operator = Operator(self.url)

    @property
    def primary_agent(self) -> str:
        return self._by_instance(self.primary_instance).agent_id

    @property
    def replica_agent(self) -> str:
        return self._by_instance(self.replica_instance).agent_id

    def _by_instance(self, instance_id: str) -> SimAgent:
        return next(a for a in self.agents.values() if a.instance_id == instance_id)

    def register(self, instance_id: str, workload: str, role: str, itype: str, az: str,
                 lifecycle: str = "spot") -> SimAgent:
        metadata = {"instance_id": instance_id, "instance_type": itype, "availability_zone": az,
                    "region": REGION, "ami_id": "ami-0123456789abcdef0", "lifecycle": lifecycle}
        response = self.http.post("/api/v1/agent/register", json={
            "enrollment_token": ENROLL, "metadata": metadata, "version": "0.1.0", "workload": workload,
            "role": role})
        assert response.status_code == 200, response.text
        body = response.json()
        agent = SimAgent(self.http, body["agent_id"], body["agent_secret"], instance_id, role, lifecycle)
        self.agents[agent.agent_id] = agent
        return agent

    def populate(self) -> None:
        now = datetime.now(UTC)
        # The old primary first, then its replacement: the chart marks the pool change.
        old = self.register(self.zombie_instance, self.workload, "primary", "m5.large", "us-east-1c")
        primary = self.register(self.primary_instance, self.workload, "primary", "m5.large", "us-east-1a")
        old.role = "zombie"
        old.heartbeat()
        self.register(self.replica_instance, self.workload, "replica", "m5.large", "us-east-1b")
        batch = self.register(self.batch_instance, self.other_workload, "primary", "c5.xlarge", "us-east-1a",
                              lifecycle="on-demand")
        primary.post("prices", self._prices(now))
        primary.post("inventory", {"instances": [
            self._record(self.primary_instance, self.workload, "primary", "us-east-1a", now - timedelta(hours=6)),
            self._record(self.replica_instance, self.workload, "replica", "us-east-1b", now - timedelta(hours=2)),
            self._record(self.zombie_instance, self.workload, "zombie", "us-east-1c", now - timedelta(hours=9)),
        ]})
        batch.post("inventory", {"instances": [
            self._record(self.batch_instance, self.other_workload, "primary", "us-east-1a",
                         now - timedelta(hours=3), itype="c5.xlarge", market="on-demand"),
        ]})
        primary.post("notices", {"notices": [self._notice(self.primary_instance, NoticeKind.REBALANCE, now)]})
        old.post("notices", {"notices": [self._notice(self.zombie_instance, NoticeKind.INTERRUPTION, now)]})
        done = self.operator.command(primary.agent_id, "collect_inventory")
        self.finish_command(primary.agent_id, done["command_id"])
        if self.db_url:
            store_decision(self.db_url, self.workload, REGION, self.primary_instance, "us-east-1b", now)

    def _prices(self, now: datetime) -> dict[str, Any]:
        spot = []
        for i, az in enumerate(("us-east-1a", "us-east-1b", "us-east-1c")):
            for step in range(0, 25):
                ts = now - timedelta(hours=9) + timedelta(minutes=22 * step)
                price = 0.030 + 0.004 * i + 0.008 * (1 + math.sin(step / 3 + i * 2)) / 2
                if az == "us-east-1c" and step > 12:
                    price += 0.02  # the pool the workload left got expensive
                spot.append({"instance_type": "m5.large", "az": az, "price": round(price, 4),
                             "timestamp": _iso(ts)})
        for step in range(0, 10):
            spot.append({"instance_type": "c5.xlarge", "az": "us-east-1a", "price": 0.07 + 0.002 * (step % 3),
                         "timestamp": _iso(now - timedelta(hours=4) + timedelta(minutes=25 * step))})
        ondemand = [{"instance_type": t, "region": REGION, "price": p, "estimated": est,
                     "source": "estimate" if est else "pricing-api"} for t, (p, est) in ON_DEMAND.items()]
        return {"spot": spot, "ondemand": ondemand}

    @staticmethod
    def _record(instance_id: str, workload: str, role: str, az: str, launched: datetime,
                itype: str = "m5.large", market: str = "spot") -> dict[str, Any]:
        return {"instance_id": instance_id, "state": "running", "az": az, "instance_type": itype,
                "pool": f"{REGION}/{itype}/{az}/{market}", "market": market, "launch_time": _iso(launched),
                "tags": {"ManagedBy": "SpotOptimizer", "SpotOptimizer:Role": role,
                         "SpotOptimizer:Workload": workload}}

    @staticmethod
    def _notice(instance_id: str, kind: NoticeKind, now: datetime) -> dict[str, Any]:
        action = _iso(now + timedelta(minutes=2))
        payload = {"action": "terminate", "time": action} if kind == NoticeKind.INTERRUPTION else {
            "noticeTime": _iso(now)}
        return {"notice_id": Notice.make_id(kind, instance_id, payload), "kind": kind.value,
                "instance_id": instance_id, "payload": payload, "detected_at": _iso(now),
                "action_time": action if kind == NoticeKind.INTERRUPTION else None}

    def toggles_seen_by_agent(self, agent_id: str) -> dict[str, bool]:
        return dict(self.agents[agent_id].heartbeat()["toggles"])

    def finish_command(self, agent_id: str, command_id: str, *, error: str | None = None,
                       error_code: str | None = None) -> None:
        agent = self.agents[agent_id]
        wait_for(f"command {command_id} delivered to {agent_id}",
                 lambda: any(c["command_id"] == command_id for c in agent.heartbeat()["commands"]))
        result: dict[str, Any] = {"command_id": command_id, "status": "failed" if error else "succeeded",
                                  "finished_at": _iso(datetime.now(UTC)), "result": {} if error else {"ok": True}}
        if error:
            result.update(error=error, error_code=error_code)
        agent.post("results", {"results": [result]})

    def promote_done(self, new_primary: str, old_primary: str) -> None:
        """After a promotion, both agents report their new roles at their next heartbeat."""
        self._by_instance(new_primary).role = "primary"
        self._by_instance(old_primary).role = "zombie"
        self._by_instance(new_primary).heartbeat()
        self._by_instance(old_primary).heartbeat()


@dataclass
class EmulatedFleet:
    """The fleet of a running emulated region: `populate` makes workload-1's seeded primary a zombie with
    real commands (launch a replica, promote it, launch another replica), so the workload has a primary,
    a replica and a zombie, each with its own real agent process."""

    stack: LocalStack
    workload: str = "workload-1"
    other_workload: str = "workload-2"
    primary_instance: str = ""
    replica_instance: str = ""
    zombie_instance: str = ""
    other_instance: str = ""
    interrupted_instance: str = ""  # the zombie that got an interruption notice while populating
    instance_type: str = ""
    azs: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        assert self.stack.admin_token == ADMIN and self.stack.enrollment_token == ENROLL
        self.operator = Operator(self.stack.server.url)

    # --- who is who ----------------------------------------------------------------------------------
    def agent_of(self, instance_id: str) -> str:
        return str(self.stack.wait_agent(instance_id)["agent_id"])

    def instance_of(self, agent_id: str) -> str:
        return str(next(a["instance_id"] for a in self.stack.agents() if a["agent_id"] == agent_id))

    @property
    def primary_agent(self) -> str:
        return self.agent_of(self.primary_instance)

    @property
    def replica_agent(self) -> str:
        return self.agent_of(self.replica_instance)

    def az_of(self, instance_id: str) -> str:
        return str(self.stack.describe(instance_id)["Placement"]["AvailabilityZone"])

    def od_price(self, instance_type: str) -> float:
        return float(self.stack.region.shim.ondemand.get(instance_type).price)

    def roles_in_ec2(self) -> dict[str, str]:
        """Role tag of every running instance of the workload, from moto."""
        ec2 = self.stack.region.moto_client("ec2")
        found = ec2.describe_instances(Filters=[{"Name": "tag:SpotOptimizer:Workload", "Values": [self.workload]},
                                                {"Name": "instance-state-name", "Values": ["running"]}])
        return {i["InstanceId"]: {t["Key"]: t["Value"] for t in i.get("Tags", [])}.get("SpotOptimizer:Role", "")
                for r in found["Reservations"] for i in r["Instances"]}

    def server_role(self, instance_id: str) -> str | None:
        return next((i["role"] for i in self.operator.get("/instances") if i["instance_id"] == instance_id), None)

    # --- building the fleet --------------------------------------------------------------------------
    def run(self, agent_id: str, type_: str, **params: Any) -> dict[str, Any]:
        done = self.stack.wait_command(self.operator.command(agent_id, type_, **params)["command_id"], timeout_s=60)
        assert done["status"] == "succeeded", done
        return done

    def launched(self, command_id: str) -> str:
        done = self.stack.wait_command(command_id, timeout_s=60)
        assert done["status"] == "succeeded", done
        instance_id = str(done["result"]["instance_id"])
        self.stack.wait_agent(instance_id, timeout_s=60)  # its own agent process registers
        return instance_id

    def populate(self) -> None:
        seeded = self.stack.region.seed.primaries
        first, self.other_instance = seeded[self.workload], seeded[self.other_workload]
        self.primary_instance = first
        self.instance_type = str(self.stack.describe(first)["InstanceType"])
        self.azs = sorted(self.stack.region.seed.subnets)
        self.stack.wait_agent(self.other_instance, timeout_s=60)
        home = self.az_of(first)
        elsewhere = [az for az in self.azs if az != home]
        # The old primary first, then its replacement in another AZ: the chart marks the pool change. Both
        # replicas are launched at once (their agents boot in parallel); the first one is promoted.
        agent = self.agent_of(first)
        launches = [self.operator.command(agent, "launch", instance_type=self.instance_type, az=az, market="spot")
                    for az in elsewhere[:2]]
        moved, self.replica_instance = (self.launched(c["command_id"]) for c in launches)
        self.run(agent, "promote", instance_id=moved, old_instance_id=first)
        self.primary_instance, self.zombie_instance = moved, first
        self.wait_roles({moved: Role.PRIMARY.value, first: Role.ZOMBIE.value,
                         self.replica_instance: Role.REPLICA.value})
        # Notices: a rebalance recommendation for the primary, an interruption for the zombie whose
        # termination lies far beyond the test run (emulated seconds at speed 1).
        self.stack.region.rebalance(moved)
        self.stack.region.interrupt(first, in_s=0, notice_s=3600)
        self.interrupted_instance = first
        wait_for("both notices at the server", lambda: len(self.operator.get("/notices")) >= 2, timeout_s=30)
        agent = self.agent_of(moved)
        other_type = str(self.stack.describe(self.other_instance)["InstanceType"])
        self.run(agent, "collect_prices", instance_types=sorted({self.instance_type, other_type}))
        self.refresh_inventory()
        store_decision(self.stack.db_url, self.workload, self.stack.region.region, moved, elsewhere[1],
                       datetime.now(UTC))

    def refresh_inventory(self) -> None:
        """What the decision loop would ask for now and then (it is off in these tests)."""
        self.run(self.agent_of(self.primary_instance), "collect_inventory")
        self.run(self.agent_of(self.other_instance), "collect_inventory")

    def wait_roles(self, roles: dict[str, str]) -> None:
        """Until EC2 tags, the server's instances and the agents' heartbeats all agree on `roles`."""
        wait_for(f"roles {roles} in EC2", lambda: all(self.roles_in_ec2().get(i) == r for i, r in roles.items()))
        wait_for(f"roles {roles} at the server", lambda: all(
            self.server_role(i) == r and (self.stack.agent_for(i) or {}).get("role") == r
            for i, r in roles.items()), timeout_s=30)

    # --- what the agents saw -------------------------------------------------------------------------
    def workdir(self, instance_id: str) -> Any:
        return self.stack.run_dir / "region" / "instances" / instance_id

    def agent_log(self, agent_id: str) -> str:
        return self.stack.agent_log(self.instance_of(agent_id))

    def toggles_seen_by_agent(self, agent_id: str) -> dict[str, bool]:
        """The toggles in the agent's own config file, once it has heartbeated twice after this call (the
        second heartbeat's request starts after the call, so its answer holds what the server had then)."""
        before = self.agent_log(agent_id).count("HEARTBEAT sent")
        wait_for(f"two heartbeats of {agent_id}", lambda: self.agent_log(agent_id).count("HEARTBEAT sent")
                 >= before + 2, timeout_s=20)
        config = json.loads((self.workdir(self.instance_of(agent_id)) / "spot_optimizer_config.json").read_text())
        return {name: bool(config[name]) for name in ("auto_switching", "auto_terminate", "manual_replica",
                                                      "emergency_only")}

    def config_updates(self, agent_id: str) -> list[str]:
        return re.findall(r"CONFIG UPDATE from server: (.*)", self.agent_log(agent_id))

    def finish_command(self, agent_id: str, command_id: str) -> None:
        self.stack.wait_command(command_id, timeout_s=60)  # the real agent carries it out and reports
