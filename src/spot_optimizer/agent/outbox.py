"""The on-disk outbox: results, notices, prices and inventory wait here until the server has them.

One file per message (0600, written atomically), named by a sequence number so delivery keeps order.
A message is deleted only after the server acknowledged it, so nothing is lost across a server outage
or an agent restart.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spot_optimizer.agent.fileio import atomic_write, ensure_private_dir

logger = logging.getLogger(__name__)

KINDS = ("notice", "result", "prices", "inventory")


@dataclass(frozen=True)
class OutboxMessage:
    seq: int
    kind: str
    payload: dict[str, Any]
    path: Path


class Outbox:
    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        ensure_private_dir(self.directory)
        self._lock = threading.Lock()
        existing = [int(p.stem.split("-")[0]) for p in self.directory.glob("*.json") if p.stem[:1].isdigit()]
        self._next_seq = max(existing, default=0) + 1

    def put(self, kind: str, payload: dict[str, Any]) -> OutboxMessage:
        if kind not in KINDS:
            raise ValueError(f"unknown outbox message kind {kind!r}")
        with self._lock:
            seq = self._next_seq
            self._next_seq += 1
            path = self.directory / f"{seq:012d}-{kind}.json"
            atomic_write(path, json.dumps({"kind": kind, "payload": payload}, default=str))
        logger.debug("Outbox: queued %s #%d", kind, seq)
        return OutboxMessage(seq, kind, payload, path)

    def pending(self) -> list[OutboxMessage]:
        messages = []
        for path in sorted(self.directory.glob("*.json")):
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                messages.append(OutboxMessage(int(path.stem.split("-")[0]), data["kind"], data["payload"], path))
            except (OSError, ValueError, KeyError) as exc:
                logger.error("Outbox message %s unreadable (%s); moved aside", path, exc)
                path.rename(path.with_suffix(".bad"))
        return messages

    def __len__(self) -> int:
        return len(list(self.directory.glob("*.json")))

    def flush(self, send: Callable[[str, list[dict[str, Any]]], None]) -> int:
        """Deliver pending messages in order, batching consecutive messages of one kind.

        `send(kind, payloads)` raises on failure; what was not acknowledged stays on disk.
        """
        delivered = 0
        messages = self.pending()
        i = 0
        while i < len(messages):
            kind = messages[i].kind
            j = i
            while j < len(messages) and messages[j].kind == kind and j - i < 100:
                j += 1
            batch = messages[i:j]
            send(kind, [m.payload for m in batch])
            for m in batch:
                m.path.unlink(missing_ok=True)
            delivered += len(batch)
            i = j
        if delivered:
            logger.info("Outbox: delivered %d message(s)", delivered)
        return delivered
