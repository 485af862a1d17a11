"""An instance metadata service (IMDSv2 only) for one emulated instance.

It follows amazon-ec2-metadata-mock's paths and formats (`../shared/data/imds-reference/`):
`PUT /latest/api/token` with a TTL header gives a token; every GET needs a live token (401 without);
notice paths answer 404 until a notice is set. Tests and the emulated region drive it through
`MetadataState`; faults (5xx, slowness, token loss) can be injected to test the agent's client.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from typing import Any

from spot_optimizer.emulator.background import BackgroundHTTPServer

logger = logging.getLogger(__name__)

TOKEN_PATH = "/latest/api/token"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
MAX_TTL = 21600


def iso_z(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def scheduled_date(moment: datetime) -> str:
    """The scheduled-events date format: `21 Jan 2019 09:00:43 GMT`."""
    return moment.astimezone(UTC).strftime("%d %b %Y %H:%M:%S GMT")


@dataclass
class MetadataState:
    """What one instance's metadata service serves. Mutate through the methods (thread-safe)."""

    instance_id: str
    instance_type: str
    availability_zone: str
    region: str
    ami_id: str
    private_ip: str | None = "10.0.0.10"
    public_ip: str | None = None
    lifecycle: str = "spot"  # "spot" | "on-demand", as instance-life-cycle answers
    clock: Callable[[], float] = time.time
    extra: dict[str, str] = field(default_factory=dict)  # other meta-data paths -> text
    _instance_action: dict[str, str] | None = None
    _rebalance: dict[str, str] | None = None
    _scheduled: list[dict[str, str]] = field(default_factory=list)
    _tokens: dict[str, float] = field(default_factory=dict)  # token -> expiry (clock seconds)
    _fail_next: list[int] = field(default_factory=list)  # HTTP statuses to answer next, in order
    delay_s: float = 0.0
    requests: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # --- notices -------------------------------------------------------------------------------
    def set_interruption(self, when: datetime, action: str = "terminate") -> None:
        with self._lock:
            self._instance_action = {"action": action, "time": iso_z(when)}

    def set_rebalance(self, notice_time: datetime) -> None:
        with self._lock:
            self._rebalance = {"noticeTime": iso_z(notice_time)}

    def add_scheduled_event(
        self,
        not_before: datetime,
        not_after: datetime,
        code: str = "system-reboot",
        event_id: str | None = None,
        description: str = "scheduled reboot",
        state: str = "active",
    ) -> str:
        event_id = event_id or f"instance-event-{secrets.token_hex(8)}"
        with self._lock:
            self._scheduled.append(
                {
                    "NotBefore": scheduled_date(not_before),
                    "Code": code,
                    "Description": description,
                    "EventId": event_id,
                    "NotAfter": scheduled_date(not_after),
                    "State": state,
                }
            )
        return event_id

    def clear_notices(self) -> None:
        with self._lock:
            self._instance_action = None
            self._rebalance = None
            self._scheduled = []

    # --- faults --------------------------------------------------------------------------------
    def fail_next(self, count: int, status: int = 500) -> None:
        with self._lock:
            self._fail_next.extend([status] * count)

    def expire_tokens(self) -> None:
        """Forget every token, as if they all expired: the next GET with an old one gets 401."""
        with self._lock:
            self._tokens.clear()

    # --- serving -------------------------------------------------------------------------------
    def issue_token(self, ttl: int) -> str:
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._tokens[token] = self.clock() + ttl
        return token

    def token_valid(self, token: str | None) -> bool:
        if not token:
            return False
        with self._lock:
            expiry = self._tokens.get(token)
        return expiry is not None and expiry > self.clock()

    def pop_fault(self) -> int | None:
        with self._lock:
            self.requests += 1
            return self._fail_next.pop(0) if self._fail_next else None

    def lookup(self, path: str) -> tuple[int, str]:
        """(status, body) for a GET of `path` (already authorised)."""
        with self._lock:
            action = dict(self._instance_action) if self._instance_action else None
            rebalance = dict(self._rebalance) if self._rebalance else None
            scheduled = [dict(e) for e in self._scheduled]
        md = "/latest/meta-data/"
        values: dict[str, str | None] = {
            "instance-id": self.instance_id,
            "instance-type": self.instance_type,
            "ami-id": self.ami_id,
            "placement/availability-zone": self.availability_zone,
            "placement/region": self.region,
            "local-ipv4": self.private_ip,
            "public-ipv4": self.public_ip,
            "instance-life-cycle": self.lifecycle,
            "spot/instance-action": json.dumps(action) if action else None,
            "spot/termination-time": action["time"] if action else None,
            "events/recommendations/rebalance": json.dumps(rebalance) if rebalance else None,
            "events/maintenance/scheduled": json.dumps(scheduled),
            **self.extra,
        }
        if path == "/latest/dynamic/instance-identity/document":
            doc: dict[str, Any] = {
                "instanceId": self.instance_id,
                "instanceType": self.instance_type,
                "availabilityZone": self.availability_zone,
                "region": self.region,
                "imageId": self.ami_id,
                "privateIp": self.private_ip,
            }
            return 200, json.dumps(doc)
        if not path.startswith(md):
            return 404, "Not Found"
        key = path[len(md) :].rstrip("/")
        value = values.get(key)
        if value is None:
            return 404, "Not Found"
        return 200, value


class _Handler(BaseHTTPRequestHandler):
    server: MetadataServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        logger.debug("imds %s: " + format, self.server.state.instance_id, *args)

    def _send(self, status: int, body: str, headers: dict[str, str] | None = None) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _common(self) -> bool:
        state = self.server.state
        if state.delay_s:
            time.sleep(state.delay_s)
        fault = state.pop_fault()
        if fault is not None:
            self._send(fault, "injected fault")
            return False
        return True

    def do_PUT(self) -> None:  # noqa: N802 - http.server naming
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        if not self._common():
            return
        if self.path != TOKEN_PATH:
            self._send(404, "Not Found")
            return
        raw = self.headers.get(TTL_HEADER)
        try:
            ttl = int(raw) if raw is not None else -1
        except ValueError:
            ttl = -1
        if not 1 <= ttl <= MAX_TTL:
            self._send(400, "Bad Request: token TTL must be 1..21600 seconds")
            return
        token = self.server.state.issue_token(ttl)
        self._send(200, token, {TTL_HEADER: str(ttl)})

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        if not self._common():
            return
        if not self.server.state.token_valid(self.headers.get(TOKEN_HEADER)):
            self._send(401, "Unauthorized")
            return
        status, body = self.server.state.lookup(self.path.split("?", 1)[0])
        self._send(status, body)


class MetadataServer(BackgroundHTTPServer):
    """Serves one MetadataState on host:port (port 0 picks a free one). Use as a context manager."""

    thread_name = "imds"

    def __init__(self, state: MetadataState, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__((host, port), _Handler)
        self.state = state

