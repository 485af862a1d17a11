"""The agent's HTTP client for the control plane (protocol models in core.protocol)."""

from __future__ import annotations

import logging
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from spot_optimizer.core.errors import SpotOptimizerError
from spot_optimizer.core.protocol import (
    API_PREFIX,
    HeartbeatRequest,
    HeartbeatResponse,
    ReconnectRequest,
    ReconnectResponse,
    RegisterRequest,
    RegisterResponse,
)

logger = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)

OUTBOX_ROUTES = {"result": ("results", "results"), "notice": ("notices", "notices")}


class ServerUnavailable(SpotOptimizerError):
    """Network error, timeout or 5xx: try again later; nothing was decided."""


class ServerRejected(SpotOptimizerError):
    """4xx: the server understood and said no."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(f"server rejected the request (HTTP {status}): {message}")


class ServerClient:
    def __init__(self, base_url: str, *, timeout_s: float = 5.0, ca_bundle: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        verify: Any = ca_bundle if ca_bundle else True
        self._http = httpx.Client(base_url=self.base_url + API_PREFIX, timeout=timeout_s, verify=verify,
                                  trust_env=False)
        self.agent_id: str | None = None
        self._secret: str | None = None

    def close(self) -> None:
        self._http.close()

    def authenticate(self, agent_id: str, secret: str) -> None:
        self.agent_id, self._secret = agent_id, secret

    def _post(self, path: str, body: BaseModel | dict[str, Any], response_model: type[M] | None = None,
              auth: bool = True) -> M | dict[str, Any]:
        headers = {}
        if auth:
            headers["Authorization"] = f"Bearer {self._secret}"
        payload = body.model_dump(mode="json") if isinstance(body, BaseModel) else body
        try:
            response = self._http.post(path, json=payload, headers=headers)
        except httpx.HTTPError as exc:
            raise ServerUnavailable(f"{self.base_url}: {type(exc).__name__}: {exc}") from exc
        if response.status_code >= 500:
            raise ServerUnavailable(f"{self.base_url}{API_PREFIX}{path}: HTTP {response.status_code}")
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise ServerRejected(response.status_code, str(detail)[:500])
        data = response.json()
        return response_model.model_validate(data) if response_model else data

    def register(self, request: RegisterRequest) -> RegisterResponse:
        result = self._post("/register", request, RegisterResponse, auth=False)
        assert isinstance(result, RegisterResponse)
        self.authenticate(result.agent_id, result.agent_secret)
        return result

    def reconnect(self, request: ReconnectRequest) -> ReconnectResponse:
        result = self._post(f"/{self.agent_id}/reconnect", request, ReconnectResponse)
        assert isinstance(result, ReconnectResponse)
        return result

    def heartbeat(self, request: HeartbeatRequest) -> HeartbeatResponse:
        result = self._post(f"/{self.agent_id}/heartbeat", request, HeartbeatResponse)
        assert isinstance(result, HeartbeatResponse)
        return result

    def send(self, kind: str, payloads: list[dict[str, Any]]) -> None:
        """Deliver outbox messages of one kind (raises if not acknowledged)."""
        if kind in OUTBOX_ROUTES:
            path, key = OUTBOX_ROUTES[kind]
            self._post(f"/{self.agent_id}/{path}", {key: payloads})
        elif kind == "prices":
            spot = [p for payload in payloads for p in payload.get("spot", [])]
            ondemand = [p for payload in payloads for p in payload.get("ondemand", [])]
            self._post(f"/{self.agent_id}/prices", {"spot": spot, "ondemand": ondemand})
        elif kind == "inventory":
            # Only the newest snapshot matters; older ones are superseded.
            self._post(f"/{self.agent_id}/inventory", payloads[-1])
        else:
            raise ValueError(f"unknown outbox kind {kind!r}")
        logger.debug("Sent %d %s message(s) to the server", len(payloads), kind)
