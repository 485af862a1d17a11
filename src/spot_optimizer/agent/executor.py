"""Runs one command exactly once: journal before, AWS call, journal after, result to the outbox.

The journal makes a repeated delivery of a finished command a no-op that re-reports the stored result;
a command that crashed mid-way runs again, which every action tolerates (a launch looks for its
request-id tag first, terminate of a gone instance is a no-op, promote just re-writes the same tags).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from spot_optimizer.agent.config import AgentConfig
from spot_optimizer.agent.journal import CommandJournal
from spot_optimizer.aws.ec2 import Ec2Operations
from spot_optimizer.aws.pricing import PriceCollector
from spot_optimizer.core.commands import (
    CollectPricesParams,
    Command,
    CommandResult,
    CommandStatus,
    CommandType,
    LaunchParams,
    PromoteParams,
    TerminateParams,
)
from spot_optimizer.core.errors import CloudError, SpotOptimizerError

logger = logging.getLogger(__name__)

# Test hook: `kill -9` at a chosen step of a launch (see tests/e2e). Each name is one step.
CRASH_POINTS = ("before_aws_call", "after_aws_call", "before_journal_finish", "before_result_sent")


def _utcnow() -> datetime:
    return datetime.now(UTC)


class CommandExecutor:
    def __init__(
        self,
        ec2: Ec2Operations,
        prices: PriceCollector,
        journal: CommandJournal,
        config: Callable[[], AgentConfig],
        emit: Callable[[str, dict[str, Any]], None],
        *,
        dry_run: bool = False,
        crash_at: str | None = None,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.ec2 = ec2
        self.prices = prices
        self.journal = journal
        self.config = config
        self.emit = emit  # (kind, payload) -> outbox
        self.dry_run = dry_run
        self.crash_at = crash_at
        self.clock = clock

    def maybe_crash(self, point: str) -> None:
        if self.crash_at == point:
            import os
            import signal

            logger.critical("CRASH POINT %s reached: killing this process (test hook)", point)
            os.kill(os.getpid(), signal.SIGKILL)

    def execute(self, command: Command, *, autonomous: bool = False) -> CommandResult:
        """Run `command` once. `autonomous`: the agent issued it itself (the result then carries it)."""
        previous = self.journal.result_of(command.command_id)
        if previous is not None:
            logger.info("Command %s (%s) already finished as %s: not running it again, re-reporting the result",
                        command.command_id, command.type.value, previous.status.value)
            self.emit("result", previous.model_dump(mode="json"))
            return previous
        rerun = self.journal.was_started(command.command_id)
        logger.info("=" * 80)
        logger.info("EXECUTING COMMAND: %s%s", command.type.value, " (re-run after an interruption)" if rerun else "")
        logger.info("Request ID: %s", command.command_id)
        logger.info("Parameters: %s", json.dumps(command.params, indent=2, sort_keys=True))
        logger.info("Reason: %s", command.reason)
        logger.info("=" * 80)
        if not rerun:
            self.journal.record_start(command)
        try:
            self.maybe_crash("before_aws_call")
            outcome = self._run(command, first_attempt=command.delivery == 1 and not rerun and not autonomous)
            self.maybe_crash("after_aws_call")
            result = CommandResult(command_id=command.command_id, status=CommandStatus.SUCCEEDED, result=outcome,
                                   finished_at=self.clock())
            logger.info("✓ COMMAND SUCCEEDED: %s %s -> %s", command.type.value, command.command_id, outcome)
        except CloudError as exc:
            logger.error("✗ COMMAND FAILED: %s %s: %s - %s", command.type.value, command.command_id, exc.code,
                         exc.message, exc_info=True)
            result = CommandResult(command_id=command.command_id, status=CommandStatus.FAILED, error=str(exc),
                                   error_code=exc.code or type(exc).__name__,
                                   result={"pool": exc.pool} if exc.pool else {}, finished_at=self.clock())
        except (SpotOptimizerError, ValueError) as exc:
            logger.error("✗ COMMAND FAILED: %s %s: %s", command.type.value, command.command_id, exc, exc_info=True)
            result = CommandResult(command_id=command.command_id, status=CommandStatus.FAILED, error=str(exc),
                                   error_code=type(exc).__name__, finished_at=self.clock())
        if autonomous:
            result.autonomous, result.command = True, command
        self.maybe_crash("before_journal_finish")
        self.journal.record_finish(result)
        self.emit("result", result.model_dump(mode="json"))
        return result

    def _run(self, command: Command, *, first_attempt: bool = False) -> dict[str, Any]:
        cfg = self.config()
        if command.type == CommandType.LAUNCH:
            params = LaunchParams.model_validate(command.params)
            if params.workload is None:
                params.workload = cfg.workload
            return self.ec2.launch(params, cfg.launch_config(), command.command_id, dry_run=self.dry_run,
                                   first_attempt=first_attempt)
        if command.type == CommandType.TERMINATE:
            tparams = TerminateParams.model_validate(command.params)
            return self.ec2.terminate(tparams.instance_id, tparams.reason, command.command_id, dry_run=self.dry_run)
        if command.type == CommandType.PROMOTE:
            pparams = PromoteParams.model_validate(command.params)
            old = pparams.old_instance_id or cfg.current_instance_id
            return self.ec2.promote(pparams.instance_id, old, command.command_id, dry_run=self.dry_run)
        if command.type == CommandType.COLLECT_INVENTORY:
            started = self.clock()  # when the listing began: anything the server learnt later is fresher
            records = self.ec2.inventory()
            self.emit("inventory", {"instances": [r.model_dump(mode="json") for r in records],
                                    "collected_at": started.isoformat()})
            return {"instances": len(records),
                    "managed": sum(1 for r in records if r.managed)}
        if command.type == CommandType.COLLECT_PRICES:
            cparams = CollectPricesParams.model_validate(command.params)
            types = cparams.instance_types or cfg.policy.instance_types or [cfg.current_instance_type or ""]
            types = [t for t in types if t]
            spot, ondemand = self.prices.collect(types)
            self.emit("prices", {"spot": [p.model_dump(mode="json") for p in spot],
                                 "ondemand": [p.model_dump(mode="json") for p in ondemand]})
            return {"spot_pools": len(spot), "ondemand": len(ondemand),
                    "estimated": [p.instance_type for p in ondemand if p.estimated]}
        raise ValueError(f"unknown command type {command.type!r}")
