"""The IMDSv2 client against a real local metadata service that follows the AEMM reference."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from spot_optimizer.aws.imds import INSTANCE_ACTION_PATH, REBALANCE_PATH, ImdsClient, resolve_endpoint
from spot_optimizer.core.errors import MetadataError
from spot_optimizer.core.models import Market
from spot_optimizer.emulator.imds import MetadataServer, MetadataState


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture()
def state(clock: FakeClock) -> MetadataState:
    return MetadataState(instance_id="i-0abc", instance_type="m5.large", availability_zone="eu-west-1b",
                         region="eu-west-1", ami_id="ami-12345678", private_ip="10.0.1.5", public_ip="54.1.2.3",
                         lifecycle="spot", clock=clock)


@pytest.fixture()
def server(state: MetadataState) -> Iterator[MetadataServer]:
    with MetadataServer(state) as srv:
        yield srv


def client_for(server: MetadataServer, clock: FakeClock, **kw: object) -> ImdsClient:
    return ImdsClient(server.url, clock=clock, sleep=lambda _s: None, **kw)  # type: ignore[arg-type]


def test_reads_instance_metadata_with_a_token(server: MetadataServer, clock: FakeClock) -> None:
    meta = client_for(server, clock).instance_metadata()
    assert (meta.instance_id, meta.instance_type, meta.availability_zone, meta.region, meta.ami_id) == (
        "i-0abc", "m5.large", "eu-west-1b", "eu-west-1", "ami-12345678")
    assert (meta.private_ip, meta.public_ip, meta.lifecycle) == ("10.0.1.5", "54.1.2.3", Market.SPOT)


def test_token_is_cached_and_refreshed_before_expiry(server: MetadataServer, clock: FakeClock) -> None:
    client = client_for(server, clock, token_ttl_s=300, refresh_margin_s=30)
    client.get("/latest/meta-data/instance-id")
    client.get("/latest/meta-data/instance-type")
    assert client.tokens_fetched == 1
    clock.now += 271  # inside the refresh margin, before the service would expire it
    client.get("/latest/meta-data/instance-id")
    assert client.tokens_fetched == 2


def test_token_is_refreshed_on_401(server: MetadataServer, state: MetadataState, clock: FakeClock) -> None:
    client = client_for(server, clock)
    client.get("/latest/meta-data/instance-id")
    state.expire_tokens()
    assert client.get("/latest/meta-data/instance-id") == "i-0abc"
    assert client.tokens_fetched == 2


def test_no_fallback_to_imdsv1_when_token_put_fails(server: MetadataServer, state: MetadataState,
                                                    clock: FakeClock) -> None:
    client = client_for(server, clock, attempts=2)
    state.fail_next(2, status=403)  # the token PUT is refused
    with pytest.raises(MetadataError, match="never used as a fallback"):
        client.get("/latest/meta-data/instance-id")
    # No tokenless GET was tried: the service saw exactly the one refused PUT.
    assert state.requests == 1


def test_service_enforces_tokens(server: MetadataServer) -> None:
    import httpx

    assert httpx.get(server.url + "/latest/meta-data/instance-id").status_code == 401
    assert httpx.put(server.url + "/latest/api/token").status_code == 400  # TTL header required
    assert httpx.put(server.url + "/latest/api/token",
                     headers={"X-aws-ec2-metadata-token-ttl-seconds": "21601"}).status_code == 400


def test_404_means_no_notice(server: MetadataServer, clock: FakeClock) -> None:
    client = client_for(server, clock)
    assert client.get(INSTANCE_ACTION_PATH) is None
    assert client.get(REBALANCE_PATH) is None


def test_notice_json_formats(server: MetadataServer, state: MetadataState, clock: FakeClock) -> None:
    when = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    state.set_interruption(when)
    state.set_rebalance(when - timedelta(minutes=5))
    client = client_for(server, clock)
    assert client.get_json(INSTANCE_ACTION_PATH) == {"action": "terminate", "time": "2026-01-01T12:00:00Z"}
    assert client.get_json(REBALANCE_PATH) == {"noticeTime": "2026-01-01T11:55:00Z"}


def test_bounded_retries_on_5xx_then_success(server: MetadataServer, state: MetadataState, clock: FakeClock) -> None:
    client = client_for(server, clock, attempts=3)
    client.get("/latest/meta-data/instance-id")
    state.fail_next(2, status=503)
    assert client.get("/latest/meta-data/instance-id") == "i-0abc"


def test_bounded_retries_give_up(server: MetadataServer, state: MetadataState, clock: FakeClock) -> None:
    client = client_for(server, clock, attempts=3)
    client.get("/latest/meta-data/instance-id")
    state.fail_next(10, status=500)
    before = state.requests
    with pytest.raises(MetadataError, match="after 3 attempts"):
        client.get("/latest/meta-data/instance-id")
    assert state.requests - before == 3


def test_short_timeout_on_a_dead_endpoint(clock: FakeClock) -> None:
    client = ImdsClient("http://127.0.0.1:9", clock=clock, sleep=lambda _s: None, attempts=2, timeout_s=0.2)
    with pytest.raises(MetadataError, match="ConnectError|failed after 2 attempts"):
        client.get("/latest/meta-data/instance-id")


def test_endpoint_comes_from_flag_then_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:1338/")
    assert resolve_endpoint() == "http://127.0.0.1:1338"
    assert resolve_endpoint("http://127.0.0.2:80") == "http://127.0.0.2:80"
    monkeypatch.delenv("AWS_EC2_METADATA_SERVICE_ENDPOINT")
    assert resolve_endpoint() == "http://169.254.169.254"


def test_invalid_json_is_a_metadata_error(server: MetadataServer, state: MetadataState, clock: FakeClock) -> None:
    state.extra["spot/instance-action"] = "{not json"
    with pytest.raises(MetadataError, match="invalid JSON"):
        client_for(server, clock).get_json(INSTANCE_ACTION_PATH)


def test_aemm_reference_paths_are_served(server: MetadataServer, clock: FakeClock, shared_data: object) -> None:
    """The paths we read are the ones the reference emulator documents."""
    from pathlib import Path

    assert isinstance(shared_data, Path)
    ref = json.loads((shared_data / "imds-reference" / "aemm-metadata-default-values.json").read_text())
    paths = ref["metadata"]["paths"]
    for key in ("instance-id", "instance-type", "ami-id", "placement-availability-zone", "local-ipv4",
                "public-ipv4", "instance-life-cycle", "spot", "rebalance-rec-time", "events"):
        assert paths[key].startswith("/latest/meta-data/")
    client = client_for(server, clock)
    for key in ("instance-id", "instance-type", "ami-id", "placement-availability-zone", "local-ipv4"):
        assert client.get(paths[key]) is not None, key


def test_agent_start_up_waits_for_a_metadata_service_that_comes_up_late(state: MetadataState,
                                                                        tmp_path: object) -> None:
    """Early in boot, or on a busy host, the metadata service may not answer yet: the agent retries with
    backoff for `startup_wait_s` instead of exiting at the first timeout, and gives up clearly after it."""
    import threading
    from pathlib import Path

    from spot_optimizer.agent.daemon import Agent, AgentSettings
    from spot_optimizer.demo.stack import free_port

    port = free_port()
    settings = AgentSettings(server_url="http://127.0.0.1:9", enrollment_token=None,
                             config_path=Path(str(tmp_path)) / "cfg.json", startup_wait_s=20.0)
    agent = Agent(settings)
    agent.imds = ImdsClient(f"http://127.0.0.1:{port}")
    late = MetadataServer(state, port=port)
    timer = threading.Timer(1.5, late.__enter__)
    timer.start()
    try:
        assert agent._read_metadata().instance_id == "i-0abc"
    finally:
        timer.join()
        late.__exit__(None, None, None)
    agent.settings.startup_wait_s = 1.0  # nobody answers at all: a clear MetadataError once the wait is over
    agent.imds = ImdsClient(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(MetadataError):
        agent._read_metadata()
