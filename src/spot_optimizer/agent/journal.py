"""The command journal: every command is written down before it runs and its result after.

An append-only JSON-lines file, fsynced per record. On start it is replayed: a finished command is never
run again (its stored result is re-reported instead); a started-but-unfinished one crashed mid-way and is
run again, which is safe because every action is idempotent (a launch finds its instance by request id).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from spot_optimizer.agent.fileio import PRIVATE_FILE, ensure_private_dir
from spot_optimizer.core.commands import Command, CommandResult
from spot_optimizer.core.errors import JournalError

logger = logging.getLogger(__name__)


class CommandJournal:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._started: dict[str, Command] = {}
        self._finished: dict[str, CommandResult] = {}
        self._replay()

    def _replay(self) -> None:
        if not self.path.exists():
            return
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise JournalError(f"cannot read command journal {self.path}: {exc}") from exc
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if record["phase"] == "started":
                    cmd = Command.model_validate(record["command"])
                    self._started[cmd.command_id] = cmd
                elif record["phase"] == "finished":
                    res = CommandResult.model_validate(record["result"])
                    self._finished[res.command_id] = res
            except (ValueError, KeyError) as exc:
                # A torn last line is what a crash during a write leaves: skip it, the command re-runs.
                logger.warning("Journal %s line %d unreadable (%s); ignored", self.path, number, exc)
        logger.info("Journal %s replayed: %d commands started, %d finished, %d unfinished", self.path,
                    len(self._started), len(self._finished), len(self.unfinished()))

    def _append(self, record: dict[str, Any]) -> None:
        ensure_private_dir(self.path.parent)
        line = json.dumps(record, separators=(",", ":"), default=str) + "\n"
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, PRIVATE_FILE)
            try:
                os.write(fd, line.encode("utf-8"))
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise JournalError(f"cannot write command journal {self.path}: {exc}") from exc

    def result_of(self, command_id: str) -> CommandResult | None:
        with self._lock:
            return self._finished.get(command_id)

    def was_started(self, command_id: str) -> bool:
        with self._lock:
            return command_id in self._started

    def unfinished(self) -> list[Command]:
        return [c for cid, c in self._started.items() if cid not in self._finished]

    def record_start(self, command: Command) -> None:
        with self._lock:
            self._append({"phase": "started", "at": datetime.now(UTC).isoformat(),
                          "command": command.model_dump(mode="json")})
            self._started[command.command_id] = command

    def record_finish(self, result: CommandResult) -> None:
        with self._lock:
            self._append({"phase": "finished", "at": datetime.now(UTC).isoformat(),
                          "result": result.model_dump(mode="json")})
            self._finished[result.command_id] = result
