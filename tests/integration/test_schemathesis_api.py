"""schemathesis against the server's own OpenAPI, in-process (ASGI): every operation, with a valid admin token,
a valid agent secret, and with no/garbage tokens. No 5xx, no response that violates the schema.

Bounded: a few examples per operation (hypothesis), so the whole file stays well under a minute and a half.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

ADMIN = "schemathesis-admin-token"
ENROLLMENT = "schemathesis-enrollment-token"


def _make_app() -> Any:
    from spot_optimizer.server.app import create_app
    from spot_optimizer.server.settings import ServerSettings

    db = Path(tempfile.mkdtemp(prefix="spot-schemathesis-")) / "server.db"
    return create_app(ServerSettings(db_url=f"sqlite:///{db}", admin_token=ADMIN, enrollment_token=ENROLLMENT,
                                     sweep_interval_s=0, decision_interval_s=0))


APP = _make_app()
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@pytest.fixture(scope="module")
def app() -> Iterator[Any]:
    with TestClient(APP) as client:  # run the lifespan once; register one real agent to aim at
        meta = {"instance_id": "i-0schema", "instance_type": "m5.large", "availability_zone": "us-east-1a",
                "region": "us-east-1", "ami_id": "ami-12345678", "lifecycle": "spot"}
        reg = client.post("/api/v1/agent/register", json={"enrollment_token": ENROLLMENT, "metadata": meta,
                                                          "version": "0.1.0"}).json()
        APP.state.test_agent = reg
        yield APP


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.mark.reliability(fault="schemathesis: generated requests to every operation, with and without valid tokens",
                         outcome="no 5xx, responses conform to the OpenAPI schema")
@schema.parametrize()
@settings(max_examples=3, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_api_conforms_and_never_fails(case: Any, app: Any) -> None:
    agent = app.state.test_agent
    base = dict(case.headers or {})
    base.pop("Authorization", None)
    if case.path_parameters and "agent_id" in case.path_parameters:
        case.path_parameters["agent_id"] = agent["agent_id"]  # aim at a real agent, so auth is what decides
    for auth in ("none", "garbage", "agent", "admin"):
        headers = dict(base)
        if auth == "admin":
            headers["Authorization"] = f"Bearer {ADMIN}"
        elif auth == "agent":
            headers["Authorization"] = f"Bearer {agent['agent_secret']}"
        elif auth == "garbage":
            headers["Authorization"] = "Bearer " + "x" * 300
        case.headers = headers
        case.call_and_validate(checks=CHECKS)
