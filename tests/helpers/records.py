"""Agent report bodies shared by the server API tests."""

from __future__ import annotations

from typing import Any


def inventory_record(instance_id: str, workload: str | None, role: str = "replica",
                     managed: bool = True) -> dict[str, Any]:
    """One running m5.large in us-east-1a as an inventory report lists it."""
    tags = {"SpotOptimizer:Role": role}
    if managed:
        tags["ManagedBy"] = "SpotOptimizer"
    if workload:
        tags["SpotOptimizer:Workload"] = workload
    return {
        "instance_id": instance_id,
        "state": "running",
        "az": "us-east-1a",
        "instance_type": "m5.large",
        "pool": "us-east-1/m5.large/us-east-1a/spot",
        "market": "spot",
        "tags": tags,
    }
