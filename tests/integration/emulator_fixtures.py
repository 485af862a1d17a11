"""Helpers shared by the emulator tests: an IMDSv2 GET, and a shim without moto for price-only tests."""

from __future__ import annotations

import urllib.error
import urllib.request
from datetime import UTC, datetime

import boto3
from botocore.config import Config

from spot_optimizer.emulator.clock import EmulatedClock
from spot_optimizer.emulator.market import OnDemandTable, SpotMarket
from spot_optimizer.emulator.shim import ShimServer

UNREACHABLE_MOTO = "http://127.0.0.1:9"  # price tests never forward


def imds_get(base_url: str, path: str, token: bool = True) -> tuple[int, str]:
    headers = {}
    if token:
        put = urllib.request.Request(
            f"{base_url}/latest/api/token", method="PUT", headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"}
        )
        with urllib.request.urlopen(put, timeout=5) as resp:
            headers["X-aws-ec2-metadata-token"] = resp.read().decode()
    try:
        with urllib.request.urlopen(urllib.request.Request(base_url + path, headers=headers), timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def client(service: str, endpoint: str, region: str = "eu-west-1", attempts: int = 1):  # noqa: ANN201
    return boto3.client(
        service,
        region_name=region,
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"total_max_attempts": attempts, "mode": "standard"}),
    )


def price_shim(market: SpotMarket, ondemand: OnDemandTable, speed: float, trace_start: datetime) -> ShimServer:
    clock = EmulatedClock(speed, trace_start)
    return ShimServer(UNREACHABLE_MOTO, clock, market, ondemand).start()


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)
