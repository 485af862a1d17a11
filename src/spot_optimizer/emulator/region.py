"""`EmulatedRegion`: moto + the wire shim + a metadata service and an agent process per instance.

with EmulatedRegion(EmulatorConfig(workloads=2, speed=60)) as region:
    ec2 = region.client("ec2")               # boto3 through the shim
    iid = region.seed.primaries["workload-1"]
    region.interrupt(iid)                    # notice now, terminated 120 emulated s later
"""

from __future__ import annotations

import atexit
import json
import logging
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from spot_optimizer.emulator.clock import EmulatedClock
from spot_optimizer.emulator.faults import CallLog, FaultInjector
from spot_optimizer.emulator.imds import MetadataServer, MetadataState
from spot_optimizer.emulator.interruptions import (
    AdvisorPlanner,
    EventKind,
    InterruptionSchedule,
    PlannedEvent,
    SpotAdvisor,
)
from spot_optimizer.emulator.market import (
    SpotMarket,
    load_ondemand,
    load_trace,
    synthetic_market,
    synthetic_ondemand,
)
from spot_optimizer.emulator.moto_process import MotoProcess, SeedResources, seed_region
from spot_optimizer.emulator.region_config import ACTIVE, EmulatedInstance, EmulatorConfig, metadata_for
from spot_optimizer.emulator.region_routes import install_routes
from spot_optimizer.emulator.runtime import DEFAULT_AGENT_COMMAND, InstanceContext, InstanceRuntime
from spot_optimizer.emulator.shim import ShimServer

__all__ = ["EmulatedInstance", "EmulatedRegion", "EmulatorConfig"]

logger = logging.getLogger(__name__)


class EmulatedRegion:
    def __init__(self, config: EmulatorConfig | None = None, **overrides: Any) -> None:
        self.config = config or EmulatorConfig()
        for key, value in overrides.items():
            setattr(self.config, key, value)
        cfg = self.config
        self.run_dir = Path(cfg.run_dir) if cfg.run_dir else Path(tempfile.mkdtemp(prefix="spot-optimizer-emulator-"))
        self.faults = FaultInjector(cfg.seed)
        self.calls = CallLog()
        self.schedule = InterruptionSchedule()
        self.moto = MotoProcess(cfg.moto_port, self.run_dir / "moto.log")
        self.clock: EmulatedClock
        self.market: SpotMarket
        self.shim: ShimServer
        self.seed: SeedResources
        self.runtime: InstanceRuntime | None = None
        self._instances: dict[str, EmulatedInstance] = {}
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._planner: AdvisorPlanner | None = None
        self._started = False
        self._subnet_az: dict[str, str] = {}

    # --- lifecycle ------------------------------------------------------------------------------
    def start(self) -> EmulatedRegion:
        cfg = self.config
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atexit.register(self.stop)  # no moto or agent outlives an interpreter that forgot to stop
        try:
            self._start(cfg)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, cfg: EmulatorConfig) -> None:
        self._started = True
        self.moto.start()
        self.seed = seed_region(self.moto, cfg.region, cfg.workloads, cfg.instance_types)
        self._subnet_az = {subnet: az for az, subnet in self.seed.subnets.items()}
        if cfg.prices:
            self.market = load_trace(Path(cfg.prices), cfg.region, cfg.trace_types)
            first, _ = self.market.time_range()
            trace_start = cfg.trace_start or datetime.fromtimestamp(first, UTC) + timedelta(days=7)
        else:
            trace_start = cfg.trace_start or datetime.now(UTC)
            self.market = synthetic_market(cfg.region, sorted(self.seed.subnets), cfg.seed, trace_start)
        self.clock = EmulatedClock(cfg.speed, trace_start)
        ondemand = load_ondemand(Path(cfg.ondemand), cfg.region) if cfg.ondemand else synthetic_ondemand(cfg.region)
        if cfg.auto_interruptions:
            if not cfg.advisor:
                raise ValueError("auto_interruptions needs the Spot Advisor file (advisor=...)")
            self._planner = AdvisorPlanner(
                SpotAdvisor.load(Path(cfg.advisor)),
                cfg.region,
                seed=cfg.seed,
                rate_multiplier=cfg.interruption_rate_multiplier,
                notice_s=cfg.notice_s,
            )
        self.shim = ShimServer(
            self.moto.url,
            self.clock,
            self.market,
            ondemand,
            self.faults,
            self.calls,
            self._resolve_subnet,
            port=cfg.port,
        ).start()
        install_routes(self)
        if cfg.server_url or cfg.agent_command is not None:
            self.runtime = InstanceRuntime(
                self.run_dir, cfg.agent_command or DEFAULT_AGENT_COMMAND, cfg.agent_env, cfg.stop_grace_s
            )
        self.refresh()
        (self.run_dir / "emulator.json").write_text(json.dumps(self.describe(), indent=2, default=str))
        self._thread = threading.Thread(target=self._loop, name="emulated-region", daemon=True)
        self._thread.start()
        logger.info("emulated region %s up: endpoint %s, run dir %s", cfg.region, self.endpoint_url, self.run_dir)

    def stop(self) -> None:
        atexit.unregister(self.stop)
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)
            self._thread = None
        if self.runtime:
            self.runtime.stop_all()
        with self._lock:
            instances = list(self._instances.values())
        for inst in instances:
            if inst.imds:
                inst.imds.stop()
                inst.imds = None
        if hasattr(self, "shim"):
            self.shim.stop()
        self.moto.stop()

    def __enter__(self) -> EmulatedRegion:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- access ---------------------------------------------------------------------------------
    @property
    def endpoint_url(self) -> str:
        return self.shim.url

    @property
    def moto_url(self) -> str:
        return self.moto.url

    @property
    def region(self) -> str:
        return self.config.region

    def client(self, service: str, retries: int = 1, **kwargs: Any) -> Any:
        """A boto3 client through the shim (the way agents talk to the region); `retries` = max attempts."""
        return boto3.client(  # type: ignore[call-overload]
            service,
            region_name=kwargs.pop("region_name", self.region),
            endpoint_url=self.endpoint_url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(retries={"total_max_attempts": retries, "mode": "standard"}),
            **kwargs,
        )

    def moto_client(self, service: str) -> Any:
        """A boto3 client straight to moto: not logged, never faulted (for checks and set-up)."""
        return self.moto.client(service, self.region)

    def instances(self) -> dict[str, EmulatedInstance]:
        with self._lock:
            return dict(self._instances)

    def instance(self, instance_id: str) -> EmulatedInstance:
        with self._lock:
            return self._instances[instance_id]

    def metadata(self, instance_id: str) -> MetadataState:
        return self.instance(instance_id).metadata

    def imds_url(self, instance_id: str) -> str | None:
        return self.instance(instance_id).imds_url

    def describe(self) -> dict[str, Any]:
        return {
            "region": self.region,
            "endpoint_url": self.endpoint_url,
            "moto_url": self.moto_url,
            "run_dir": str(self.run_dir),
            "speed": self.clock.speed,
            "seed": self.seed.to_dict(),
        }

    # --- scripting ------------------------------------------------------------------------------
    def interrupt(
        self, instance_id: str, in_s: float = 0.0, notice_s: float | None = None, action: str = "terminate"
    ) -> PlannedEvent:
        """A two-minute (`notice_s` emulated) interruption notice `in_s` emulated seconds from now."""
        notice = self.config.notice_s if notice_s is None else notice_s
        event = PlannedEvent(self.clock.elapsed() + in_s, instance_id, EventKind.INTERRUPTION, notice, action)
        return self.schedule.add(event)

    def rebalance(self, instance_id: str, in_s: float = 0.0) -> PlannedEvent:
        return self.schedule.add(PlannedEvent(self.clock.elapsed() + in_s, instance_id, EventKind.REBALANCE))

    def scheduled_event(
        self, instance_id: str, in_s: float = 0.0, code: str = "system-reboot", lead_s: float = 3600.0
    ) -> PlannedEvent:
        event = PlannedEvent(self.clock.elapsed() + in_s, instance_id, EventKind.SCHEDULED, code=code, lead_s=lead_s)
        return self.schedule.add(event)

    def set_price(self, instance_type: str, az: str, price: float) -> None:
        """A spot price move now (in trace time), visible to the next DescribeSpotPriceHistory."""
        with self.shim.market_lock:
            self.market.set_price(instance_type, az, price, self.clock.trace_time().timestamp())

    def kill_agent(self, instance_id: str, sig: int = signal.SIGKILL) -> bool:
        """Crash an instance's agent (the instance stays up); `restart_agent` brings it back."""
        if not self.runtime:
            raise RuntimeError("no instance runtime (start the region with server_url or agent_command)")
        return self.runtime.kill(instance_id, sig)

    def restart_agent(self, instance_id: str) -> None:
        if not self.runtime:
            raise RuntimeError("no instance runtime (start the region with server_url or agent_command)")
        self.runtime.stop(instance_id)
        self._start_agent(self.instance(instance_id))

    def wait_until(self, condition: Callable[[], Any], timeout_s: float = 30.0, poll_s: float = 0.05) -> Any:
        """Poll `condition` until it returns something truthy (returned); TimeoutError after timeout_s."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = condition()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met within {timeout_s} s")
            time.sleep(poll_s)

    def instance_state(self, instance_id: str) -> str:
        reservations = self.moto_client("ec2").describe_instances(InstanceIds=[instance_id])["Reservations"]
        return str(reservations[0]["Instances"][0]["State"]["Name"])

    # --- the loop -------------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.wait(self.config.poll_interval_s):
            try:
                self.refresh()
                self.fire_due()
            except Exception:
                logger.exception("emulated region tick failed")

    def refresh(self) -> None:
        """Look at moto once: serve metadata for new instances, start/stop agents on state changes."""
        ec2 = self.moto_client("ec2")
        seen: list[dict[str, Any]] = []
        for page in ec2.get_paginator("describe_instances").paginate():
            for reservation in page["Reservations"]:
                seen.extend(reservation["Instances"])
        for raw in seen:
            iid, state = raw["InstanceId"], raw["State"]["Name"]
            with self._lock:
                inst = self._instances.get(iid)
                if inst is None:
                    if state not in ACTIVE:
                        continue
                    inst = self._serve(raw)
                previous, inst.state = inst.state, state
                inst.tags = {t["Key"]: t["Value"] for t in raw.get("Tags", [])}
            if state == "running":
                if inst.first_running_wall is None:
                    inst.first_running_wall = self.clock.wall()
                self._maybe_start_agent(inst)
            elif state not in ACTIVE and previous in ACTIVE:
                self._ended(inst)

    def _serve(self, raw: dict[str, Any]) -> EmulatedInstance:
        metadata = metadata_for(raw, self.region)
        lifecycle = metadata.lifecycle
        server = MetadataServer(metadata).start()
        inst = EmulatedInstance(
            raw["InstanceId"],
            raw["InstanceType"],
            metadata.availability_zone,
            lifecycle,
            raw["State"]["Name"],
            {},
            metadata,
            server,
        )
        self._instances[inst.instance_id] = inst
        if self._planner and lifecycle == "spot":
            for event in self._planner.plan(inst.instance_id, inst.instance_type, self.clock.elapsed()):
                self.schedule.add(event)
        logger.info(
            "instance %s (%s, %s, %s): metadata at %s",
            inst.instance_id,
            inst.instance_type,
            inst.availability_zone,
            lifecycle,
            server.url,
        )
        return inst

    def _maybe_start_agent(self, inst: EmulatedInstance) -> None:
        if self.runtime is None or inst.imds is None or inst.first_running_wall is None:
            return
        proc = self.runtime.get(inst.instance_id)
        if proc is not None and proc.ended_at is None:
            return
        if proc is not None:
            return  # ended on purpose (stopped instance restarting is not emulated)
        if self.clock.wall() < inst.first_running_wall + self.clock.real_seconds(self.config.boot_s):
            return
        self._start_agent(inst)

    def _start_agent(self, inst: EmulatedInstance) -> None:
        assert self.runtime is not None and inst.imds is not None
        ctx = InstanceContext(
            inst.instance_id,
            self.region,
            self.endpoint_url,
            inst.imds.url,
            self.runtime.workdir(inst.instance_id),
            self.config.server_url or "",
            self.config.enrollment_token,
        )
        self.runtime.start(ctx)

    def _ended(self, inst: EmulatedInstance) -> None:
        logger.info("instance %s is %s: ending its agent and metadata service", inst.instance_id, inst.state)
        self.schedule.cancel(inst.instance_id)
        runtime = self.runtime

        def finish() -> None:
            if runtime is not None:
                runtime.stop(inst.instance_id)
            server, inst.imds = inst.imds, None
            if server is not None:
                server.stop()

        threading.Thread(target=finish, name=f"end-{inst.instance_id}", daemon=True).start()

    def fire_due(self) -> list[PlannedEvent]:
        with self._lock:
            ready = {iid for iid, inst in self._instances.items() if inst.imds is not None}
        fired = self.schedule.due(self.clock.elapsed(), ready)
        for event in fired:
            event.fired_at = self.clock.wall()
            self._fire(event)
        return fired

    def _fire(self, event: PlannedEvent) -> None:
        logger.info("instance %s: %s (%s)", event.instance_id, event.kind.value, event.source)
        if event.kind == EventKind.TERMINATE:
            ec2 = self.moto_client("ec2")
            if event.action == "terminate":
                ec2.terminate_instances(InstanceIds=[event.instance_id])
            else:
                ec2.stop_instances(InstanceIds=[event.instance_id])
            return
        metadata = self.metadata(event.instance_id)
        if event.kind == EventKind.REBALANCE:
            metadata.set_rebalance(self.clock.now())
        elif event.kind == EventKind.INTERRUPTION:
            metadata.set_interruption(self.clock.after(event.notice_s), event.action)
            follow = PlannedEvent(
                event.at_s + event.notice_s,
                event.instance_id,
                EventKind.TERMINATE,
                action=event.action,
                source=event.source,
            )
            self.schedule.add(follow)
        elif event.kind == EventKind.SCHEDULED:
            start = self.clock.after(event.lead_s)
            metadata.add_scheduled_event(start, start + timedelta(hours=2), code=event.code)

    def _resolve_subnet(self, subnet_id: str) -> str | None:
        az = self._subnet_az.get(subnet_id)
        if az is None:
            try:
                subnets = self.moto_client("ec2").describe_subnets(SubnetIds=[subnet_id])["Subnets"]
            except Exception:  # an unknown subnet: moto will answer the RunInstances with the error
                logger.debug("subnet %s unknown", subnet_id, exc_info=True)
                return None
            az = subnets[0]["AvailabilityZone"] if subnets else None
            if az:
                self._subnet_az[subnet_id] = az
        return az
