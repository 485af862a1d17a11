"""IMDSv2 client: session tokens, short timeouts, bounded retries, and never a fallback to IMDSv1.

The token is cached and refreshed a margin before it expires and again whenever the service answers
401 (its token was lost or expired early). 404 on a notice path means "no notice".
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import httpx

from spot_optimizer.core.errors import MetadataError
from spot_optimizer.core.models import InstanceMetadata, Market

logger = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "http://169.254.169.254"
ENDPOINT_ENV = "AWS_EC2_METADATA_SERVICE_ENDPOINT"
TOKEN_PATH = "/latest/api/token"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"

INSTANCE_ACTION_PATH = "/latest/meta-data/spot/instance-action"
REBALANCE_PATH = "/latest/meta-data/events/recommendations/rebalance"
SCHEDULED_PATH = "/latest/meta-data/events/maintenance/scheduled"


def resolve_endpoint(flag: str | None = None) -> str:
    """The flag wins, then the variable boto uses, then the link-local address."""
    return (flag or os.environ.get(ENDPOINT_ENV) or DEFAULT_ENDPOINT).rstrip("/")


class ImdsClient:
    def __init__(
        self,
        endpoint: str | None = None,
        *,
        token_ttl_s: int = 21600,
        refresh_margin_s: float = 60.0,
        timeout_s: float = 1.0,
        attempts: int = 3,
        backoff_s: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not 1 <= token_ttl_s <= 21600:
            raise ValueError("IMDSv2 token TTL must be 1..21600 seconds")
        self.endpoint = resolve_endpoint(endpoint)
        self.token_ttl_s = token_ttl_s
        self.refresh_margin_s = min(refresh_margin_s, token_ttl_s / 2)
        self.attempts = max(1, attempts)
        self.backoff_s = backoff_s
        self._clock = clock
        self._sleep = sleep
        self._http = httpx.Client(base_url=self.endpoint, timeout=timeout_s, trust_env=False)
        self._token: str | None = None
        self._token_expires_at = 0.0
        self.tokens_fetched = 0

    def close(self) -> None:
        self._http.close()

    # --- token -----------------------------------------------------------------------------------
    def _fetch_token(self) -> str:
        response = self._request("PUT", TOKEN_PATH, headers={TTL_HEADER: str(self.token_ttl_s)}, auth=False)
        if response.status_code != 200 or not response.text:
            raise MetadataError(
                f"IMDSv2 token request to {self.endpoint}{TOKEN_PATH} failed with HTTP {response.status_code}; "
                "IMDSv1 is never used as a fallback"
            )
        self._token = response.text.strip()
        self._token_expires_at = self._clock() + self.token_ttl_s
        self.tokens_fetched += 1
        logger.debug("IMDSv2 token obtained (ttl=%ss) from %s", self.token_ttl_s, self.endpoint)
        return self._token

    def _current_token(self) -> str:
        if self._token is None or self._clock() >= self._token_expires_at - self.refresh_margin_s:
            return self._fetch_token()
        return self._token

    # --- requests --------------------------------------------------------------------------------
    def _request(
        self, method: str, path: str, *, headers: dict[str, str] | None = None, auth: bool = True
    ) -> httpx.Response:
        """One call with bounded retries on transport errors and 5xx (not on 4xx)."""
        last_error: str = ""
        for attempt in range(1, self.attempts + 1):
            hdrs = dict(headers or {})
            if auth:
                hdrs[TOKEN_HEADER] = self._current_token()
            try:
                response = self._http.request(method, path, headers=hdrs)
            except httpx.HTTPError as exc:
                last_error = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code < 500:
                    return response
                last_error = f"HTTP {response.status_code}"
            logger.debug("IMDS %s %s attempt %d/%d failed: %s", method, path, attempt, self.attempts, last_error)
            if attempt < self.attempts:
                self._sleep(self.backoff_s * attempt)
        raise MetadataError(f"IMDS {method} {self.endpoint}{path} failed after {self.attempts} attempts: {last_error}")

    def get(self, path: str) -> str | None:
        """Text at `path`, or None on 404. A 401 means our token went stale: fetch a new one, try once more."""
        response = self._request("GET", path)
        if response.status_code == 401:
            logger.debug("IMDS answered 401 for %s: refreshing the token", path)
            self._token = None
            response = self._request("GET", path)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise MetadataError(f"IMDS GET {path} answered HTTP {response.status_code}")
        return response.text

    def get_required(self, path: str) -> str:
        value = self.get(path)
        if value is None:
            raise MetadataError(f"IMDS has no value at {path}")
        return value.strip()

    def get_json(self, path: str) -> Any:
        text = self.get(path)
        if text is None:
            return None
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise MetadataError(f"IMDS {path} returned invalid JSON: {text[:200]!r}") from exc

    # --- instance facts --------------------------------------------------------------------------
    def instance_metadata(self) -> InstanceMetadata:
        md = "/latest/meta-data/"
        az = self.get_required(md + "placement/availability-zone")
        region = self.get(md + "placement/region")
        lifecycle = (self.get(md + "instance-life-cycle") or "on-demand").strip()
        meta = InstanceMetadata(
            instance_id=self.get_required(md + "instance-id"),
            instance_type=self.get_required(md + "instance-type"),
            availability_zone=az,
            region=region.strip() if region else az[:-1],
            ami_id=self.get_required(md + "ami-id"),
            private_ip=(self.get(md + "local-ipv4") or "").strip() or None,
            public_ip=(self.get(md + "public-ipv4") or "").strip() or None,
            lifecycle=Market.SPOT if lifecycle == "spot" else Market.ON_DEMAND,
        )
        logger.info(
            "Instance metadata: id=%s type=%s az=%s region=%s ami=%s private_ip=%s public_ip=%s lifecycle=%s",
            meta.instance_id, meta.instance_type, meta.availability_zone, meta.region, meta.ami_id,
            meta.private_ip, meta.public_ip, meta.lifecycle.value,
        )
        return meta
