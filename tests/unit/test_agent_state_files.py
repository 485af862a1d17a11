"""Persistent config, command journal and outbox: atomic, private, corruption-safe."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spot_optimizer.agent.config import AgentConfig, ConfigStore
from spot_optimizer.agent.journal import CommandJournal
from spot_optimizer.agent.outbox import Outbox
from spot_optimizer.core.commands import Command, CommandResult, CommandStatus, CommandType
from spot_optimizer.core.errors import ConfigError
from spot_optimizer.core.models import LaunchConfig, Toggles


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_config_persists_seed_fields_with_mode_0600(tmp_path: Path) -> None:
    store = ConfigStore(tmp_path / "conf" / "spot_optimizer_config.json")
    cfg = AgentConfig(agent_id="a-1", auto_switching=True)
    cfg.set_launch_config(LaunchConfig(ami_id="ami-1", instance_type="m5.large", availability_zone="eu-west-1a",
                                       subnet_id="subnet-1", security_groups=["sg-1"], key_name="k",
                                       iam_instance_profile="arn:aws:iam::1:instance-profile/p"), "i-1")
    store.save(cfg)
    data = json.loads(store.path.read_text())
    for key in ("agent_id", "auto_switching", "auto_terminate", "manual_replica", "emergency_only",
                "current_instance_ami", "current_security_groups", "current_subnet_id",
                "current_iam_instance_profile", "current_key_name", "last_updated", "schema_version"):
        assert key in data, key
    assert mode(store.path) == 0o600
    assert mode(store.path.parent) == 0o700
    again = store.load()
    assert again.agent_id == "a-1" and again.toggles == Toggles(auto_switching=True)
    assert again.launch_config().iam_instance_profile_name == "p"


def test_corrupt_config_names_the_file_and_is_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "spot_optimizer_config.json"
    path.write_text('{"agent_id": "a-1", ')
    with pytest.raises(ConfigError, match=str(path)):
        ConfigStore(path).load()
    assert path.read_text() == '{"agent_id": "a-1", '


def test_newer_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"schema_version": 99}))
    with pytest.raises(ConfigError, match="schema_version 99"):
        ConfigStore(path).load()


@pytest.mark.parametrize(("errno", "text"), [(28, "No space left on device"), (30, "Read-only file system")])
def test_failed_write_keeps_old_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, errno: int,
                                       text: str) -> None:
    """A disk-full or read-only write leaves the previous file intact and says so. (The test runs as root,
    which ignores permission bits, so the filesystem's error is raised where the write is flushed.)"""
    store = ConfigStore(tmp_path / "c.json")
    store.save(AgentConfig(agent_id="old"))
    real_fsync = os.fsync

    def full_disk(fd: int) -> None:
        raise OSError(errno, text)

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(ConfigError, match=text):
        store.save(AgentConfig(agent_id="new"))
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert store.load().agent_id == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["c.json"]  # no temp file left behind


@settings(max_examples=60, deadline=None)
@given(st.one_of(st.binary(max_size=200), st.dictionaries(st.text(max_size=10), st.integers() | st.text(max_size=5)
                                                          | st.booleans() | st.none(), max_size=6)))
def test_loader_never_crashes_on_arbitrary_files(tmp_path_factory: Any, content: Any) -> None:
    """Whatever is on disk, the loader gives a config or a ConfigError naming the file."""
    path = tmp_path_factory.mktemp("cfg") / "c.json"
    path.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    try:
        ConfigStore(path).load()
    except ConfigError as exc:
        assert str(path) in str(exc)


def _cmd(cid: str) -> Command:
    return Command(command_id=cid, type=CommandType.LAUNCH, params={"instance_type": "m5.large"})


def _res(cid: str) -> CommandResult:
    return CommandResult(command_id=cid, status=CommandStatus.SUCCEEDED, result={"instance_id": "i-1"},
                         finished_at=datetime.now(UTC))


def test_journal_replays_started_and_finished(tmp_path: Path) -> None:
    path = tmp_path / "state" / "journal.jsonl"
    journal = CommandJournal(path)
    journal.record_start(_cmd("c1"))
    journal.record_finish(_res("c1"))
    journal.record_start(_cmd("c2"))
    again = CommandJournal(path)
    assert again.result_of("c1") is not None and again.result_of("c1").result == {"instance_id": "i-1"}  # type: ignore[union-attr]
    assert [c.command_id for c in again.unfinished()] == ["c2"]
    assert mode(path) == 0o600


def test_journal_survives_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    journal = CommandJournal(path)
    journal.record_start(_cmd("c1"))
    with path.open("a") as fh:
        fh.write('{"phase": "finished", "result": {"command_')  # crash mid-write
    again = CommandJournal(path)
    assert [c.command_id for c in again.unfinished()] == ["c1"]


def test_outbox_keeps_order_and_survives_restart(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox")
    box.put("notice", {"n": 1})
    box.put("result", {"r": 1})
    box.put("result", {"r": 2})
    assert all(mode(m.path) == 0o600 for m in box.pending())
    assert mode(tmp_path / "outbox") == 0o700
    sent: list[tuple[str, list[dict[str, Any]]]] = []

    def down(kind: str, payloads: list[dict[str, Any]]) -> None:
        raise ConnectionError("server down")

    with pytest.raises(ConnectionError):
        box.flush(down)
    reopened = Outbox(tmp_path / "outbox")  # an agent restart
    assert len(reopened) == 3
    reopened.put("notice", {"n": 2})
    reopened.flush(lambda kind, payloads: sent.append((kind, payloads)))
    assert sent == [("notice", [{"n": 1}]), ("result", [{"r": 1}, {"r": 2}]), ("notice", [{"n": 2}])]
    assert len(reopened) == 0
