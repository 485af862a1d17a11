"""The demo's scenario: every flow of the system, one after another, each checked as it happens.

1. a price move that makes the decision engine switch a workload to a cheaper pool;
2. a rebalance recommendation that starts a replica;
3. an interruption notice that promotes that replica with no downtime;
4. a capacity error that makes a replacement fall through to another pool;
5. capacity errors in every spot pool: on-demand fallback, then the return to spot;
6. zombies terminated (auto_terminate), throughout.

Each step acts through the emulated region (prices, notices, faults) exactly as AWS would, and waits for
what the system does about it, as seen in EC2 (moto) and the operator API.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from rich.console import Console

from spot_optimizer.core.models import ROLE_TAG, WORKLOAD_TAG
from spot_optimizer.demo.stack import LocalStack

# The demo's pace: fast heartbeats, a decision pass every 2 s, prices and inventory every 5 s.
SERVER_FLAGS = ("--heartbeat-interval", "1", "--decision-interval", "2", "--prices-refresh", "5",
                "--inventory-refresh", "5", "--command-lease", "10")
AGENT_ARGS = ("--heartbeat-interval", "1", "--notice-poll-interval", "1")

# Engine settings for a demo that lasts minutes, not days (the defaults are for production).
DEMO_SETTINGS: dict[str, Any] = {
    "cooldown_s": 20.0,
    "horizon_s": 24 * 3600.0,
    "boot_time_s": 5.0,
    "capacity_backoff_s": 20.0,
    # A notice makes its pool look risky; in the demo that memory fades within a minute.
    "risk_half_life_s": 8.0,
}


@dataclass
class Inst:
    instance_id: str
    state: str
    role: str | None
    itype: str
    az: str
    spot: bool

    @property
    def pool(self) -> str:
        return f"{self.itype}/{self.az}/{'spot' if self.spot else 'on-demand'}"


@dataclass
class StepResult:
    name: str
    ok: bool
    detail: str
    seconds: float


@dataclass
class Scenario:
    stack: LocalStack
    console: Console
    deadline: float  # time.monotonic() by which everything must be over
    workloads: list[str]
    itype: str
    results: list[StepResult] = field(default_factory=list)
    between_steps: Callable[[str], None] | None = None  # called after each step with its name (tests)

    # --- what EC2 says ---------------------------------------------------------------------------
    def instances(self, workload: str) -> list[Inst]:
        ec2 = self.stack.region.moto_client("ec2")
        found = []
        for page in ec2.get_paginator("describe_instances").paginate(
                Filters=[{"Name": f"tag:{WORKLOAD_TAG}", "Values": [workload]}]):
            for r in page["Reservations"]:
                for i in r["Instances"]:
                    tags = {t["Key"]: t["Value"] for t in i.get("Tags", [])}
                    found.append(Inst(i["InstanceId"], i["State"]["Name"], tags.get(ROLE_TAG), i["InstanceType"],
                                      i["Placement"]["AvailabilityZone"], i.get("InstanceLifecycle") == "spot"))
        return found

    def primary(self, workload: str) -> Inst | None:
        live = [i for i in self.instances(workload) if i.role == "primary" and i.state in ("pending", "running")]
        return live[0] if len(live) == 1 else None

    def running(self, workload: str, role: str) -> list[Inst]:
        return [i for i in self.instances(workload) if i.role == role and i.state == "running"]

    # --- pacing ----------------------------------------------------------------------------------
    def wait(self, what: str, probe: Callable[[], Any], timeout_s: float = 60.0) -> Any:
        end = min(time.monotonic() + timeout_s, self.deadline)
        while time.monotonic() < end:
            try:
                value = probe()
            except Exception:  # noqa: BLE001 - a transient read error is just "not yet"
                value = None
            if value:
                return value
            time.sleep(0.25)
        return None

    def step(self, name: str, action: Callable[[], tuple[bool, str]]) -> None:
        if time.monotonic() >= self.deadline:
            self.results.append(StepResult(name, False, "skipped: the demo's --duration ran out", 0.0))
            return
        self.console.rule(f"[bold cyan]{name}")
        started = time.monotonic()
        try:
            ok, detail = action()
        except Exception as exc:  # noqa: BLE001 - report the step as failed and go on with the next
            ok, detail = False, f"error: {exc}"
        self.results.append(StepResult(name, ok, detail, time.monotonic() - started))
        if self.between_steps is not None:
            self.between_steps(name)
        colour = "green" if ok else "red"
        self.console.print(f"[{colour}]{'✓' if ok else '✗'} {name}: {detail}")

    def server_price(self, itype: str, az: str) -> float | None:
        for quote in self.stack.op.get("/prices", instance_type=itype)["spot"]:
            if quote["az"] == az:
                return float(quote["price"])
        return None

    def set_prices(self, itype: str, prices: dict[str, float]) -> bool:
        """Move spot prices in the emulated market and wait until the server has collected them."""
        for az, price in prices.items():
            self.stack.region.set_price(itype, az, price)
        return bool(self.wait("prices collected", lambda: all(
            self.server_price(itype, az) == price for az, price in prices.items()), 30))

    def od_price(self, itype: str) -> float:
        return float(self.stack.region.shim.ondemand.get(itype).price)

    def failed_launches(self, workload: str, since: datetime) -> list[dict[str, Any]]:
        def issued(c: dict[str, Any]) -> datetime:
            at = datetime.fromisoformat(c["issued_at"].replace("Z", "+00:00"))
            return at if at.tzinfo else at.replace(tzinfo=UTC)

        return [c for c in self.stack.op.get("/commands", workload=workload, status="failed")
                if c["type"] == "launch" and issued(c) >= since and
                c.get("error_code") == "InsufficientInstanceCapacity"]

    def other_azs(self, az: str) -> list[str]:
        return [z for z in sorted(self.stack.region.seed.subnets) if z != az]

    # --- the flows -------------------------------------------------------------------------------
    def price_move(self) -> tuple[bool, str]:
        w = self.workloads[0]
        p = self.primary(w)
        if p is None:
            return False, f"{w} has no primary"
        od = self.od_price(p.itype)
        cheap_az = self.other_azs(p.az)[0]
        # First make the current pool the cheapest and switch auto_switching on: nothing should move ...
        self.set_prices(p.itype, {p.az: round(od * 0.2, 5), **{az: round(od * 0.35, 5) for az in self.other_azs(p.az)}})
        agent = self.stack.wait_agent(p.instance_id)
        self.stack.op.toggles(agent["agent_id"], auto_switching=True)
        time.sleep(6)  # three decision passes
        if (q := self.primary(w)) is None or q.instance_id != p.instance_id:
            return False, f"{w} moved before the price moved"
        # ... then the price moves.
        self.set_prices(p.itype, {p.az: round(od * 0.85, 5), cheap_az: round(od * 0.25, 5)})  # 85 %: above max
        self.console.print(f"spot price of {p.itype} in {p.az} jumps to 85 % of on-demand; {cheap_az} drops to 25 %")
        moved = self.wait("switch", lambda: (q := self.primary(w)) and q.instance_id != p.instance_id and q, 90)
        if not moved:
            return False, f"{w} did not move away from {p.pool}"
        return True, f"{w} switched {p.pool} -> {moved.pool}"

    def rebalance(self) -> tuple[bool, str]:
        w = self.workloads[1 % len(self.workloads)]
        p = self.primary(w)
        if p is None:
            return False, f"{w} has no primary"
        self.stack.region.rebalance(p.instance_id)
        self.console.print(f"rebalance recommendation for {w}'s primary {p.instance_id} ({p.pool})")
        replica = self.wait("replica", lambda: self.running(w, "replica"), 90)
        if not replica:
            return False, "no replica started"
        ready = self.wait("replica agent", lambda: self.stack.agent_for(replica[0].instance_id), 60)
        return bool(ready), f"replica {replica[0].instance_id} started in {replica[0].pool}"

    def interruption(self) -> tuple[bool, str]:
        w = self.workloads[1 % len(self.workloads)]
        p = self.primary(w)
        if p is None:
            return False, f"{w} has no primary"
        self.stack.region.interrupt(p.instance_id)
        self.console.print(f"two-minute interruption notice for {w}'s primary {p.instance_id}")
        new = self.wait("promotion", lambda: (q := self.primary(w)) and q.instance_id != p.instance_id and q, 90)
        if not new:
            return False, "the replica was not promoted"
        return True, f"replica {new.instance_id} promoted to primary; {p.instance_id} is a zombie"

    def capacity_error(self) -> tuple[bool, str]:
        w = self.workloads[2 % len(self.workloads)]
        p = self.primary(w)
        if p is None:
            return False, f"{w} has no primary"
        first, second = self.other_azs(p.az)[:2]
        od = self.od_price(p.itype)
        since = datetime.now(UTC)
        # the obvious choice (cheapest) has no capacity
        self.set_prices(p.itype, {first: round(od * 0.2, 5), second: round(od * 0.3, 5)})
        self.stack.region.faults.insufficient_capacity(p.itype, first)
        self.stack.region.interrupt(p.instance_id)
        self.console.print(f"{p.itype} in {first} has no capacity; interruption notice for {w}'s primary")
        new = self.wait("replacement", lambda: (q := self.primary(w)) and q.instance_id != p.instance_id and q, 120)
        self.stack.region.faults.clear()
        if not new:
            return False, "no replacement became primary"
        failed = self.failed_launches(w, since)
        if not failed:
            return False, f"no launch hit the capacity error; replacement went straight to {new.pool}"
        pools = ", ".join(str((c.get("result") or {}).get("pool") or c["params"].get("az")) for c in failed)
        return new.az != first, f"launch failed with InsufficientInstanceCapacity in {pools}; now in {new.pool}"

    def ondemand_fallback(self) -> tuple[bool, str]:
        w = self.workloads[2 % len(self.workloads)]
        p = self.primary(w)
        if p is None:
            return False, f"{w} has no primary"
        for az in self.stack.region.seed.subnets:
            self.stack.region.faults.insufficient_capacity(p.itype, az, market="spot")
        self.stack.region.interrupt(p.instance_id)
        self.console.print(f"no spot capacity for {p.itype} in any AZ; interruption notice for {w}'s primary")
        od = self.wait("on-demand", lambda: (q := self.primary(w)) and not q.spot and q, 120)
        if not od:
            self.stack.region.faults.clear()
            return False, "no on-demand fallback"
        self.console.print(f"{w} runs on-demand in {od.pool}; spot capacity comes back")
        self.stack.region.faults.clear()
        back = self.wait("return to spot", lambda: (q := self.primary(w)) and q.spot and q, 120)
        if not back:
            return False, f"fell back to on-demand ({od.pool}) but did not return to spot"
        return True, f"fell back to {od.pool}, returned to spot in {back.pool}"

    def zombies(self) -> tuple[bool, str]:
        def running_zombies() -> list[Inst]:
            return [z for w in self.workloads for z in self.running(w, "zombie")]

        self.wait("zombies terminated", lambda: not running_zombies(), 60)
        left = running_zombies()
        terminated = [c for c in self.stack.op.get("/commands", status="succeeded")
                      if c["type"] == "terminate" and not (c["result"] or {}).get("noop")]
        if left:
            return False, f"{len(terminated)} zombie(s) terminated, still running: " + \
                ", ".join(f"{z.instance_id} ({z.pool})" for z in left)
        return bool(terminated), f"{len(terminated)} zombie(s) terminated by auto_terminate, none left running"

    def run(self) -> list[StepResult]:
        for w in self.workloads:
            p = self.primary(w)
            if p is not None:
                agent = self.stack.wait_agent(p.instance_id)
                self.stack.op.toggles(agent["agent_id"], auto_terminate=True)
                self.stack.op.http.put(f"/workloads/{w}/policy", json={"settings": DEMO_SETTINGS})
        self.step("1. price move -> switch", self.price_move)
        self.step("2. rebalance recommendation -> replica", self.rebalance)
        self.step("3. interruption notice -> promotion, no downtime", self.interruption)
        self.step("4. capacity error -> next pool", self.capacity_error)
        self.step("5. on-demand fallback -> return to spot", self.ondemand_fallback)
        self.step("6. zombies terminated", self.zombies)
        return self.results
