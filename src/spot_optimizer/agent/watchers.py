"""Notice watchers: spot interruption, rebalance recommendation, scheduled maintenance.

Each watcher is small and testable alone (the pattern of aws-node-termination-handler): it reads one
metadata path and turns what it finds into Notices. The monitor polls all of them every 2 s by default,
drops notices already seen (the id is a hash of the payload, so polling the same notice twice adds
nothing; seen ids are kept on disk across restarts), and hands new ones to one queue.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Protocol

from spot_optimizer.agent.fileio import atomic_write
from spot_optimizer.aws.imds import INSTANCE_ACTION_PATH, REBALANCE_PATH, SCHEDULED_PATH, ImdsClient
from spot_optimizer.core.errors import MetadataError
from spot_optimizer.core.models import Notice, NoticeKind

logger = logging.getLogger(__name__)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def parse_iso(value: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def parse_scheduled_date(value: str) -> datetime | None:
    """`21 Jan 2019 09:00:43 GMT` -> datetime (UTC)."""
    try:
        return parsedate_to_datetime(value).astimezone(UTC)
    except (TypeError, ValueError, IndexError):
        return None


class Watcher(Protocol):
    kind: NoticeKind

    def poll(self) -> list[Notice]: ...


class _JsonWatcher:
    path: str
    kind: NoticeKind

    def __init__(self, imds: ImdsClient, instance_id: str, clock: Callable[[], datetime] = _utcnow) -> None:
        self.imds = imds
        self.instance_id = instance_id
        self.clock = clock

    def _read(self) -> Any:
        return self.imds.get_json(self.path)

    def _notice(self, payload: dict[str, Any], action_time: datetime | None) -> Notice:
        return Notice(notice_id=Notice.make_id(self.kind, self.instance_id, payload), kind=self.kind,
                      instance_id=self.instance_id, payload=payload, detected_at=self.clock(),
                      action_time=action_time)


class InterruptionWatcher(_JsonWatcher):
    path = INSTANCE_ACTION_PATH
    kind = NoticeKind.INTERRUPTION

    def poll(self) -> list[Notice]:
        data = self._read()
        if not isinstance(data, dict) or "action" not in data:
            if data is not None:
                logger.warning("Ignoring malformed instance-action payload: %r", data)
            return []
        return [self._notice(data, parse_iso(str(data.get("time", ""))))]


class RebalanceWatcher(_JsonWatcher):
    path = REBALANCE_PATH
    kind = NoticeKind.REBALANCE

    def poll(self) -> list[Notice]:
        data = self._read()
        if not isinstance(data, dict) or "noticeTime" not in data:
            if data is not None:
                logger.warning("Ignoring malformed rebalance payload: %r", data)
            return []
        return [self._notice(data, parse_iso(str(data["noticeTime"])))]


class ScheduledEventsWatcher(_JsonWatcher):
    path = SCHEDULED_PATH
    kind = NoticeKind.SCHEDULED

    def poll(self) -> list[Notice]:
        data = self._read()
        if not isinstance(data, list):
            return []
        notices = []
        for event in data:
            if not isinstance(event, dict) or event.get("State", "active") not in ("active", "scheduled"):
                continue  # completed / canceled events are history, not notices
            notices.append(self._notice(event, parse_scheduled_date(str(event.get("NotBefore", "")))))
        return notices


class SeenNotices:
    """Ids of notices already handed on, persisted so a restart does not hand them on again."""

    def __init__(self, path: Path | None, limit: int = 1000) -> None:
        self.path = path
        self.limit = limit
        self._ids: list[str] = []
        if path and path.exists():
            try:
                self._ids = [str(i) for i in json.loads(path.read_text())][-limit:]
            except (OSError, ValueError, TypeError) as exc:
                logger.warning("Seen-notice file %s unreadable (%s); starting empty", path, exc)

    def __contains__(self, notice_id: object) -> bool:
        return notice_id in self._ids

    def add(self, notice_id: str) -> None:
        self._ids.append(notice_id)
        self._ids = self._ids[-self.limit :]
        if self.path:
            try:
                atomic_write(self.path, json.dumps(self._ids))
            except OSError as exc:
                logger.error("Could not persist seen notices to %s: %s", self.path, exc)


class NoticeMonitor:
    """Polls every watcher every `interval_s` and puts each new notice on `out` exactly once."""

    def __init__(
        self,
        watchers: list[Watcher],
        out: queue.Queue[Notice],
        *,
        interval_s: float = 2.0,
        seen: SeenNotices | None = None,
        on_notice: Callable[[], None] | None = None,
    ) -> None:
        self.watchers = watchers
        self.out = out
        self.on_notice = on_notice  # wakes the consumer of `out` at once
        self.interval_s = interval_s
        self.seen = seen or SeenNotices(None)
        self.polls = 0
        self.errors = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def poll_once(self) -> list[Notice]:
        new: list[Notice] = []
        self.polls += 1
        for watcher in self.watchers:
            try:
                found = watcher.poll()
            except MetadataError as exc:
                # A flapping metadata service must produce neither a false notice nor a crash: try again
                # at the next poll (a notice stays visible for its whole two minutes).
                self.errors += 1
                logger.warning("Notice watcher %s: metadata unavailable (%s); will retry", watcher.kind.value, exc)
                continue
            for notice in found:
                if notice.notice_id in self.seen:
                    continue
                self.seen.add(notice.notice_id)
                level = logging.CRITICAL if notice.kind == NoticeKind.INTERRUPTION else logging.WARNING
                logger.log(level, "NOTICE DETECTED: %s on %s id=%s action_time=%s payload=%s", notice.kind.value,
                           notice.instance_id, notice.notice_id,
                           notice.action_time.isoformat() if notice.action_time else None, notice.payload)
                self.out.put(notice)
                if self.on_notice is not None:
                    self.on_notice()
                new.append(notice)
        return new

    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll_once()
            self._stop.wait(self.interval_s)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="notice-monitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
