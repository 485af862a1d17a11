"""The wire-protocol shim in front of moto: boto3 points its endpoint here.

It answers `DescribeSpotPriceHistory` (EC2 query/XML) and the Pricing API's `GetProducts` (JSON 1.1)
from the market replayed on the emulated clock, injects faults, logs every call, forwards everything
else to moto unchanged, and serves a small control API under `/_emulator/`.
"""

from __future__ import annotations

import http.client
import itertools
import json
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from spot_optimizer.emulator import wire
from spot_optimizer.emulator.background import BackgroundHTTPServer
from spot_optimizer.emulator.clock import EmulatedClock
from spot_optimizer.emulator.faults import CallContext, CallLog, Fault, FaultInjector
from spot_optimizer.emulator.market import OnDemandTable, PriceRecord, SpotMarket

logger = logging.getLogger(__name__)

HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "proxy-connection", "upgrade"}
_SCOPE = re.compile(r"Credential=([^/,\s]+)/\d{8}/([^/]+)/([^/]+)/aws4_request")
_CODE = re.compile(rb"<Code>([^<]+)</Code>")

Route = Callable[[dict[str, Any] | None, dict[str, str]], tuple[int, Any]]


@dataclass
class _Answer:
    status: int
    body: bytes
    headers: dict[str, str]
    error_code: str | None = None


class ShimServer(BackgroundHTTPServer):
    request_queue_size = 128  # many agents connect at once
    thread_name = "aws-shim"

    def __init__(
        self,
        moto_url: str,
        clock: EmulatedClock,
        market: SpotMarket,
        ondemand: OnDemandTable,
        faults: FaultInjector | None = None,
        calls: CallLog | None = None,
        subnet_az: Callable[[str], str | None] = lambda _subnet: None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__((host, port), _Handler)
        parts = urlsplit(moto_url)
        self.moto_host, self.moto_port = parts.hostname or "127.0.0.1", parts.port or 80
        self.clock = clock
        self.market = market
        self.ondemand = ondemand
        self.faults = faults or FaultInjector()
        self.calls = calls or CallLog()
        self.subnet_az = subnet_az
        self.market_lock = threading.Lock()
        self.routes: dict[tuple[str, str], Route] = {}
        self._install_routes()

    def add_route(self, method: str, path: str, handler: Route) -> None:
        self.routes[(method.upper(), path)] = handler

    # --- control API ----------------------------------------------------------------------------
    def _install_routes(self) -> None:
        def calls(_body: Any, q: dict[str, str]) -> tuple[int, Any]:
            since = float(q["since"]) if "since" in q else None
            found = self.calls.list(q.get("action"), since, int(q.get("after_seq", 0)))
            return 200, {"calls": [c.to_dict() for c in found]}

        def clear_calls(_body: Any, _q: dict[str, str]) -> tuple[int, Any]:
            self.calls.clear()
            return 200, {"cleared": True}

        def faults(_body: Any, _q: dict[str, str]) -> tuple[int, Any]:
            return 200, {"faults": [f.to_dict() for f in self.faults.list()]}

        def add_fault(body: Any, _q: dict[str, str]) -> tuple[int, Any]:
            items = body if isinstance(body, list) else [body or {}]
            ids = [self.faults.add(Fault.from_dict(item)) for item in items]
            return 201, {"fault_ids": ids}

        def del_faults(_body: Any, q: dict[str, str]) -> tuple[int, Any]:
            if "id" in q:
                return 200, {"removed": self.faults.remove(int(q["id"]))}
            self.faults.clear()
            return 200, {"removed": True}

        def clock(body: Any, _q: dict[str, str]) -> tuple[int, Any]:
            if body and "speed" in body:
                self.clock.set_speed(float(body["speed"]))
            return 200, {
                "speed": self.clock.speed,
                "wall": self.clock.wall(),
                "emulated_s": self.clock.elapsed(),
                "trace_time": self.clock.trace_time().isoformat(),
            }

        def set_price(body: Any, _q: dict[str, str]) -> tuple[int, Any]:
            body = body or {}
            at = self.clock.trace_time().timestamp()
            with self.market_lock:
                self.market.set_price(body["instance_type"], body["availability_zone"], float(body["price"]), at)
            return 200, {"trace_time": at}

        self.add_route("GET", "/_emulator/health", lambda _b, _q: (200, {"ok": True}))
        self.add_route("GET", "/_emulator/calls", calls)
        self.add_route("DELETE", "/_emulator/calls", clear_calls)
        self.add_route("GET", "/_emulator/faults", faults)
        self.add_route("POST", "/_emulator/faults", add_fault)
        self.add_route("DELETE", "/_emulator/faults", del_faults)
        self.add_route("GET", "/_emulator/clock", clock)
        self.add_route("POST", "/_emulator/clock", clock)
        self.add_route("POST", "/_emulator/prices", set_price)

    # --- AWS ------------------------------------------------------------------------------------
    def describe_spot_price_history(self, params: dict[str, str]) -> _Answer:
        now = self.clock.wall()
        try:
            token = wire.decode_token(params["NextToken"]) if params.get("NextToken") else {}
            end_wall = min(wire.parse_ec2_time(params["EndTime"]), now) if params.get("EndTime") else now
            start_wall = wire.parse_ec2_time(params["StartTime"]) if params.get("StartTime") else None
            max_results = int(params.get("MaxResults") or 1000)
        except ValueError as exc:
            return _Answer(400, wire.ec2_error("InvalidParameterValue", str(exc)), {})
        if not 5 <= max_results <= 1000:
            msg = f"MaxResults must be between 5 and 1000, got {max_results}"
            return _Answer(400, wire.ec2_error("InvalidParameterValue", msg), {})
        trace0 = self.clock.trace_start.timestamp()
        end_trace = float(token.get("e", trace0 + self.clock.elapsed(end_wall)))
        start_trace = token.get("s", None if start_wall is None else trace0 + self.clock.elapsed(start_wall))
        offset = int(token.get("o", 0))
        filters = wire.query_filters(params)
        azs = [params["AvailabilityZone"]] if params.get("AvailabilityZone") else []
        with self.market_lock:
            records = self.market.history(
                start_trace,
                end_trace,
                wire.query_list(params, "InstanceType"),
                azs,
                wire.query_list(params, "ProductDescription"),
            )
            checks: dict[str, Callable[[PriceRecord], str]] = {
                "availability-zone": lambda r: r.availability_zone,
                "instance-type": lambda r: r.instance_type,
                "product-description": lambda r: r.product_description,
                "spot-price": lambda r: f"{r.price:.6f}",
            }
            picked = (
                r
                for r in records
                if all(
                    any(fnmatchcase(checks[name](r), pattern) for pattern in values)
                    for name, values in filters.items()
                    if name in checks
                )
            )
            page = list(itertools.islice(picked, offset, offset + max_results + 1))
        more = len(page) > max_results
        page = page[:max_results]
        items = [
            {
                "instance_type": r.instance_type,
                "product_description": r.product_description,
                "spot_price": f"{r.price:.6f}",
                "timestamp": wire.ec2_time(self.clock.wall_at(r.timestamp - trace0)),
                "availability_zone": r.availability_zone,
            }
            for r in page
        ]
        next_token = wire.encode_token({"o": offset + max_results, "s": start_trace, "e": end_trace}) if more else None
        return _Answer(200, wire.spot_price_history_xml(items, next_token), {"Content-Type": "text/xml"})

    def get_products(self, request: dict[str, Any]) -> _Answer:
        try:
            answer = wire.get_products(self.ondemand, request)
        except ValueError as exc:
            return _Answer(
                400, wire.json_error("InvalidParameterException", str(exc)), _JSON, "InvalidParameterException"
            )
        return _Answer(200, json.dumps(answer).encode(), _JSON)

    def forward(self, method: str, path: str, headers: dict[str, str], body: bytes) -> _Answer:
        conn = http.client.HTTPConnection(self.moto_host, self.moto_port, timeout=120)
        try:
            conn.request(method, path, body=body or None, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            out = {k: v for k, v in resp.getheaders() if k.lower() not in HOP_HEADERS}
        finally:
            conn.close()
        code = None
        if resp.status >= 400:
            m = _CODE.search(data)
            code = m.group(1).decode() if m else None
        return _Answer(resp.status, data, out, code)


_JSON = {"Content-Type": "application/x-amz-json-1.1"}


class _Handler(BaseHTTPRequestHandler):
    server: ShimServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        logger.debug("shim: " + format, *args)

    def do_GET(self) -> None:  # noqa: N802
        self._handle()

    def do_POST(self) -> None:  # noqa: N802
        self._handle()

    def do_PUT(self) -> None:  # noqa: N802
        self._handle()

    def do_DELETE(self) -> None:  # noqa: N802
        self._handle()

    def do_HEAD(self) -> None:  # noqa: N802
        self._handle()

    def _send(self, answer: _Answer) -> None:
        self.send_response(answer.status)
        for key, value in answer.headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(answer.body)

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        split = urlsplit(self.path)
        if split.path.startswith("/_emulator/"):
            self._control(split.path, split.query, body)
            return
        arrived, started = time.time(), time.perf_counter()
        srv = self.server
        service, access_key = "unknown", None
        m = _SCOPE.search(self.headers.get("Authorization", ""))
        if m:
            access_key, service = m.group(1), m.group(3)
        target = self.headers.get("X-Amz-Target", "")
        params: dict[str, str] = {}
        json_request: dict[str, Any] | None = None
        if target:
            action = target.rsplit(".", 1)[-1]
            try:
                json_request = json.loads(body or b"{}")
            except ValueError:
                json_request = {}
            params = {k: json.dumps(v) if not isinstance(v, str) else v for k, v in (json_request or {}).items()}
        elif "x-www-form-urlencoded" in self.headers.get("Content-Type", "") or self.command == "GET":
            params = wire.parse_query(body, split.query)
            action = params.get("Action", f"{self.command} {split.path}")
        else:
            action = f"{self.command} {split.path}"
        ctx = self._context(service, action, params)
        delay, fault = srv.faults.match(ctx, srv.clock.elapsed())
        if delay:
            time.sleep(delay)
        if fault is not None:
            answer = self._fault_answer(fault, target)
        elif action == "DescribeSpotPriceHistory" and not target:
            answer = srv.describe_spot_price_history(params)
        elif target.startswith(wire.PRICING_TARGET_PREFIX) and action == "GetProducts":
            answer = srv.get_products(json_request or {})
        else:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS}
            try:
                answer = srv.forward(self.command, self.path, headers, body)
            except OSError as exc:
                logger.warning("moto unreachable for %s: %s", action, exc)
                answer = _Answer(503, wire.ec2_error("Unavailable", f"moto unreachable: {exc}"), {}, "Unavailable")
        if answer.status >= 400 and answer.error_code is None:
            m2 = _CODE.search(answer.body)
            answer.error_code = m2.group(1).decode() if m2 else None
        logged = {
            k: (v if len(v) <= 256 else v[:256] + "...") for k, v in params.items() if k not in ("Action", "Version")
        }
        srv.calls.record(
            wall=arrived,
            emulated_s=srv.clock.elapsed(arrived),
            service=service,
            action=action,
            status=answer.status,
            error_code=answer.error_code,
            duration_ms=(time.perf_counter() - started) * 1000,
            params=logged,
            access_key=access_key,
        )
        self._send(answer)

    def _context(self, service: str, action: str, params: dict[str, str]) -> CallContext:
        if action != "RunInstances":
            return CallContext(service, action)
        az = params.get("Placement.AvailabilityZone")
        subnet = params.get("SubnetId") or params.get("NetworkInterface.1.SubnetId")
        if not az and subnet:
            az = self.server.subnet_az(subnet)
        market = "spot" if params.get("InstanceMarketOptions.MarketType") == "spot" else "on-demand"
        return CallContext(service, action, params.get("InstanceType"), az, market)

    @staticmethod
    def _fault_answer(fault: Fault, target: str) -> _Answer:
        code = fault.error_code or "InternalError"
        if target:
            return _Answer(fault.status(), wire.json_error(code, fault.error_message()), dict(_JSON), code)
        return _Answer(fault.status(), wire.ec2_error(code, fault.error_message()), {"Content-Type": "text/xml"}, code)

    def _control(self, path: str, query: str, body: bytes) -> None:
        route = self.server.routes.get((self.command, path.rstrip("/")))
        q = {k: v[-1] for k, v in parse_qs(query).items()}
        if route is None:
            status, payload = 404, {"error": f"no route {self.command} {path}"}
        else:
            try:
                data = json.loads(body) if body else None
                status, payload = route(data, q)
            except (ValueError, KeyError, TypeError) as exc:
                status, payload = 400, {"error": f"{type(exc).__name__}: {exc}"}
        out = json.dumps(payload, default=str).encode()
        self._send(_Answer(status, out, {"Content-Type": "application/json"}))
