"""Where the dashboard tests get a fleet to look at.

`SimulatedFleet` speaks the real agent API over HTTP, as agents would (register with the enrollment token,
heartbeat, report prices, inventory, notices and command results), against a real server process. The
tests only use the `DashboardFleet` interface, so a source backed by the full emulated region (real agent
processes on moto) can replace it: it must name a workload with a primary, a replica and a zombie, report
what toggles an agent received, and let a command run to its result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import httpx

from helpers.procs import ENROLL, Operator, wait_for
from spot_optimizer.core.models import Notice, NoticeKind

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

    def finish_command(self, agent_id: str, command_id: str, *, error: str | None = None,
                       error_code: str | None = None) -> None:
        """Let the agent receive the command and report its result (failed when `error` is set)."""
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
            self._decision(now)

    def _decision(self, now: datetime) -> None:
        """One decision with its rationale, stored as the decision loop stores it (the loop is off here)."""
        from spot_optimizer.server.db import make_engine, make_session_factory
        from spot_optimizer.server.services.decisions import record_decision

        engine = make_engine(self.db_url)
        try:
            with make_session_factory(engine)() as session:
                record_decision(
                    session, workload=self.workload, now=now,
                    actions=[{"type": "launch", "pool": f"{REGION}/m5.large/us-east-1b/spot", "role": "replica"}],
                    rationale=["rebalance recommendation for i-0a000000000000001: start a replica in another pool",
                               "us-east-1b is the cheapest safe pool at $0.0340/h (on-demand $0.0960/h)"],
                )
        finally:
            engine.dispose()

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
