"""Notice watchers against a real local metadata service: formats, de-duplication, flapping."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spot_optimizer.agent.watchers import (
    InterruptionWatcher,
    NoticeMonitor,
    RebalanceWatcher,
    ScheduledEventsWatcher,
    SeenNotices,
    parse_iso,
    parse_scheduled_date,
)
from spot_optimizer.aws.imds import ImdsClient
from spot_optimizer.core.models import Notice, NoticeKind
from spot_optimizer.emulator.imds import MetadataServer, MetadataState

WHEN = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@pytest.fixture()
def state() -> MetadataState:
    return MetadataState(instance_id="i-0abc", instance_type="m5.large", availability_zone="eu-west-1a",
                         region="eu-west-1", ami_id="ami-1")


@pytest.fixture()
def imds(state: MetadataState) -> Iterator[ImdsClient]:
    with MetadataServer(state) as srv:
        client = ImdsClient(srv.url, sleep=lambda _s: None, attempts=2)
        yield client
        client.close()


def monitor_for(imds: ImdsClient, seen: SeenNotices | None = None,
                woken: list[int] | None = None) -> tuple[NoticeMonitor, queue.Queue[Notice]]:
    out: queue.Queue[Notice] = queue.Queue()
    watchers = [InterruptionWatcher(imds, "i-0abc"), RebalanceWatcher(imds, "i-0abc"),
                ScheduledEventsWatcher(imds, "i-0abc")]
    on_notice = (lambda: woken.append(out.qsize())) if woken is not None else None
    return NoticeMonitor(watchers, out, seen=seen, on_notice=on_notice), out


def test_nothing_pending_gives_no_notice(imds: ImdsClient) -> None:
    monitor, out = monitor_for(imds)
    assert monitor.poll_once() == [] and out.empty()


def test_each_kind_of_notice_is_detected_once(imds: ImdsClient, state: MetadataState) -> None:
    woken: list[int] = []  # the agent's main loop is woken once per new notice, after it is queued
    monitor, out = monitor_for(imds, woken=woken)
    state.set_interruption(WHEN)
    state.set_rebalance(WHEN - timedelta(minutes=10))
    state.add_scheduled_event(WHEN + timedelta(days=1), WHEN + timedelta(days=2), event_id="instance-event-1")
    first = monitor.poll_once()
    assert sorted(n.kind for n in first) == sorted(NoticeKind)
    interruption = next(n for n in first if n.kind == NoticeKind.INTERRUPTION)
    assert interruption.action_time == WHEN and interruption.payload["action"] == "terminate"
    scheduled = next(n for n in first if n.kind == NoticeKind.SCHEDULED)
    assert scheduled.payload["EventId"] == "instance-event-1"
    assert scheduled.action_time == WHEN + timedelta(days=1)
    for _ in range(5):  # the same notices polled again add nothing
        assert monitor.poll_once() == []
    assert out.qsize() == 3
    assert woken == [1, 2, 3]


def test_a_changed_notice_is_a_new_notice(imds: ImdsClient, state: MetadataState) -> None:
    monitor, _ = monitor_for(imds)
    state.set_interruption(WHEN, action="stop")
    monitor.poll_once()
    state.set_interruption(WHEN, action="terminate")
    assert [n.payload["action"] for n in monitor.poll_once()] == ["terminate"]


def test_seen_notices_survive_a_restart(imds: ImdsClient, state: MetadataState, tmp_path: Path) -> None:
    state.set_interruption(WHEN)
    monitor, _ = monitor_for(imds, SeenNotices(tmp_path / "seen.json"))
    assert len(monitor.poll_once()) == 1
    restarted, _ = monitor_for(imds, SeenNotices(tmp_path / "seen.json"))
    assert restarted.poll_once() == []


def test_flapping_metadata_gives_no_false_and_no_missed_notice(imds: ImdsClient, state: MetadataState) -> None:
    monitor, out = monitor_for(imds)
    state.fail_next(50, status=500)  # the service is down for a while
    for _ in range(5):
        assert monitor.poll_once() == []
    assert monitor.errors > 0 and out.empty()
    state.set_interruption(WHEN)
    state.expire_tokens()  # and it lost our token meanwhile
    for _ in range(20):
        if monitor.poll_once():
            break
    assert out.qsize() == 1 and out.get().kind == NoticeKind.INTERRUPTION


def test_completed_scheduled_events_are_not_notices(imds: ImdsClient, state: MetadataState) -> None:
    state.add_scheduled_event(WHEN, WHEN + timedelta(hours=1), state="completed")
    assert ScheduledEventsWatcher(imds, "i-0abc").poll() == []


def test_notice_id_is_a_hash_of_the_payload() -> None:
    a = Notice.make_id(NoticeKind.INTERRUPTION, "i-1", {"action": "terminate", "time": "x"})
    b = Notice.make_id(NoticeKind.INTERRUPTION, "i-1", {"time": "x", "action": "terminate"})
    c = Notice.make_id(NoticeKind.INTERRUPTION, "i-2", {"action": "terminate", "time": "x"})
    assert a == b != c


def test_date_parsers() -> None:
    assert parse_scheduled_date("21 Jan 2019 09:00:43 GMT") == datetime(2019, 1, 21, 9, 0, 43, tzinfo=UTC)
    assert parse_iso("2026-01-01T12:00:00Z") == WHEN


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=40))
def test_metadata_date_parsers_never_crash(text: str) -> None:
    for parser in (parse_iso, parse_scheduled_date):
        result = parser(text)
        assert result is None or result.tzinfo is not None
