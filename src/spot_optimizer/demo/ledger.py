"""What the demo measured: cost, on-demand reference cost and downtime, sampled from the emulated EC2.

Every `interval_s` (real time) the sampler reads every instance from moto and charges each running one
its pool's price for the elapsed *emulated* time (the world runs `speed` times faster); a workload with
no running `primary` during a sample accrues downtime. The on-demand reference is one on-demand instance
of each workload's original type for the whole run.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from spot_optimizer.core.models import ROLE_TAG, WORKLOAD_TAG

logger = logging.getLogger(__name__)


@dataclass
class Ledger:
    cost_usd: float = 0.0
    ondemand_cost_usd: float = 0.0
    downtime_s: dict[str, float] = field(default_factory=dict)
    samples: int = 0

    @property
    def savings_pct(self) -> float:
        return 100.0 * (1.0 - self.cost_usd / self.ondemand_cost_usd) if self.ondemand_cost_usd else 0.0


class CostSampler:
    def __init__(self, region: Any, workload_types: dict[str, str], interval_s: float = 0.5) -> None:
        self.region = region
        self.workload_types = workload_types  # workload -> the instance type of its first primary
        self.interval_s = interval_s
        self.ledger = Ledger(downtime_s=dict.fromkeys(workload_types, 0.0))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ec2 = region.moto_client("ec2")

    def _price(self, instance: dict[str, Any]) -> float:
        itype, az = instance["InstanceType"], instance["Placement"]["AvailabilityZone"]
        if instance.get("InstanceLifecycle") == "spot":
            quote = self.region.market.price_at(itype, az, self.region.clock.trace_time().timestamp())
            if quote is not None:
                return float(quote)
        od = self.region.shim.ondemand.get(itype)
        return float(od.price) if od else 0.0

    def sample(self, dt_emulated_s: float) -> None:
        pages = self._ec2.get_paginator("describe_instances").paginate(
            Filters=[{"Name": "instance-state-name", "Values": ["pending", "running"]}])
        has_primary = dict.fromkeys(self.workload_types, False)
        hours = dt_emulated_s / 3600.0
        for page in pages:
            for reservation in page["Reservations"]:
                for inst in reservation["Instances"]:
                    tags = {t["Key"]: t["Value"] for t in inst.get("Tags", [])}
                    workload = tags.get(WORKLOAD_TAG)
                    if workload not in self.workload_types:
                        continue
                    self.ledger.cost_usd += self._price(inst) * hours
                    if tags.get(ROLE_TAG) == "primary" and inst["State"]["Name"] == "running":
                        has_primary[workload] = True
        for workload, itype in self.workload_types.items():
            od = self.region.shim.ondemand.get(itype)
            self.ledger.ondemand_cost_usd += (od.price if od else 0.0) * hours
            if not has_primary[workload]:
                self.ledger.downtime_s[workload] += dt_emulated_s
        self.ledger.samples += 1

    def _run(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(self.interval_s):
            now = time.monotonic()
            try:
                self.sample((now - last) * self.region.clock.speed)
            except Exception as exc:  # noqa: BLE001 - a missed sample must not end the demo
                logger.debug("cost sample failed: %s", exc)
            last = now

    def start(self) -> CostSampler:
        self._thread = threading.Thread(target=self._run, name="cost-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> Ledger:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)
        return self.ledger
