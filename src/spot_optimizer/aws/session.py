"""boto3 clients with botocore's adaptive retry mode. The only place a boto3 client is made.

Endpoints follow boto3's own variables (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_EC2`,
`AWS_ENDPOINT_URL_PRICING`), which is how the emulated region and moto's server mode are reached.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config

logger = logging.getLogger(__name__)

# The Pricing API is served from us-east-1 (and a few others) only, whatever region we manage.
PRICING_REGION = "us-east-1"


@dataclass(frozen=True)
class AwsSettings:
    region: str
    max_attempts: int = 5
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 20.0
    endpoint_url: str | None = None  # overrides the environment, for tests


def client_config(settings: AwsSettings, region: str | None = None) -> Config:
    return Config(
        region_name=region or settings.region,
        retries={"mode": "adaptive", "total_max_attempts": settings.max_attempts},
        connect_timeout=settings.connect_timeout_s,
        read_timeout=settings.read_timeout_s,
    )


def make_client(service: str, settings: AwsSettings, region: str | None = None) -> Any:
    session = boto3.session.Session()
    kwargs: dict[str, Any] = {"config": client_config(settings, region)}
    if settings.endpoint_url:
        kwargs["endpoint_url"] = settings.endpoint_url
    client = session.client(service, **kwargs)  # type: ignore[call-overload]
    logger.debug(
        "AWS client ready: service=%s region=%s endpoint=%s retry=adaptive/%d",
        service, region or settings.region, client.meta.endpoint_url, settings.max_attempts,
    )
    return client


def ec2_client(settings: AwsSettings) -> Any:
    return make_client("ec2", settings)


def pricing_client(settings: AwsSettings) -> Any:
    return make_client("pricing", settings, region=PRICING_REGION)
