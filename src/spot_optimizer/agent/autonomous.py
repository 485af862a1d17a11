"""What the agent does by itself on an interruption notice while the control plane is unreachable.

With its last known policy: launch a replacement in the best other pool (other AZs first, then the
others, spot before on-demand), moving on at a capacity error, on-demand as the last resort; then
promote it and tag itself zombie. Command ids derive from the notice id, so a restart mid-way finds
the same journal entries and request-id tags instead of launching twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from spot_optimizer.agent.config import AgentConfig
from spot_optimizer.agent.executor import CommandExecutor
from spot_optimizer.aws.ec2 import tags_of
from spot_optimizer.core.commands import Command, CommandStatus, CommandType
from spot_optimizer.core.errors import SpotOptimizerError
from spot_optimizer.core.models import ROLE_TAG, Market, Notice, Role

logger = logging.getLogger(__name__)


def candidate_pools(config: AgentConfig) -> list[tuple[str, str, Market]]:
    """(type, az, market) to try, best first: same type elsewhere, other types, on-demand last."""
    own_type = config.current_instance_type or ""
    own_az = config.current_availability_zone or ""
    types = list(dict.fromkeys([own_type, *config.policy.instance_types])) if own_type else \
        list(config.policy.instance_types)
    azs = list(dict.fromkeys([*config.policy.availability_zones, own_az]))
    other_azs = [az for az in azs if az and az != own_az] or [own_az]
    pools: list[tuple[str, str, Market]] = []
    for itype in types:
        for az in other_azs:
            pools.append((itype, az, Market.SPOT))
    if config.policy.allow_on_demand and types:
        pools.append((types[0], other_azs[0], Market.ON_DEMAND))
    return pools


def existing_successor(config: AgentConfig, executor: CommandExecutor) -> str | None:
    """A live sibling of this workload (the replacement the server launched before it went away, or a
    standby replica): promote that instead of launching another one."""
    if not config.workload:
        return None
    try:
        siblings = executor.ec2.workload_instances(config.workload)
    except SpotOptimizerError as exc:
        logger.warning("Could not look for an existing successor (%s); launching one", exc)
        return None
    rank = {Role.PRIMARY.value: 0, Role.REPLICA.value: 1}
    candidates = sorted(
        (rank[tags_of(i).get(ROLE_TAG, "")], i["State"]["Name"] != "running", i["InstanceId"]) for i in siblings
        if i["InstanceId"] != config.current_instance_id and tags_of(i).get(ROLE_TAG) in rank
    )
    if not candidates:
        return None
    logger.warning("Found a live successor %s in workload %s: promoting it instead of launching",
                   candidates[0][2], config.workload)
    return candidates[0][2]


def act_alone(
    notice: Notice,
    config: AgentConfig,
    executor: CommandExecutor,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> str | None:
    """Launch + promote without the server. Returns the new primary's instance id, or None."""
    logger.critical("Control plane unreachable during an interruption notice: acting alone (policy %s)",
                    config.policy.model_dump())
    new_id = existing_successor(config, executor)
    for n, (itype, az, market) in enumerate([] if new_id else candidate_pools(config)):
        command = Command(
            command_id=f"auto-{notice.notice_id}-launch-{n}", type=CommandType.LAUNCH, issued_at=clock(),
            params={"instance_type": itype, "az": az, "market": market.value, "role": Role.REPLICA.value,
                    "workload": config.workload},
            reason=f"autonomous replacement for interruption notice {notice.notice_id}",
        )
        result = executor.execute(command, autonomous=True)
        if result.status == CommandStatus.SUCCEEDED and result.result.get("instance_id"):
            new_id = str(result.result["instance_id"])
            break
        logger.warning("Autonomous launch in %s/%s/%s failed (%s); trying the next pool", itype, az, market.value,
                       result.error_code)
    if new_id is None:
        logger.critical("Autonomous replacement failed in every pool of the last known policy")
        return None
    promote = Command(
        command_id=f"auto-{notice.notice_id}-promote", type=CommandType.PROMOTE, issued_at=clock(),
        params={"instance_id": new_id, "old_instance_id": config.current_instance_id},
        reason=f"autonomous promotion for interruption notice {notice.notice_id}",
    )
    executor.execute(promote, autonomous=True)
    return new_id
