"""Logging: the seed's format, file and stream handlers, JSON option, and secrets never logged."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from spot_optimizer.agent.logsetup import redact, setup_logging


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)


def test_seed_format_debug_by_default_to_file(tmp_path: Path) -> None:
    log = tmp_path / "agent.log"
    setup_logging(log_file=log, stream=False)
    logging.getLogger("spot_optimizer.test").debug("hello %s", "world")
    line = log.read_text().strip()
    assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} - spot_optimizer\.test - \[DEBUG\] - "
                    r"\[test_seed_format_debug_by_default_to_file:\d+\] - hello world$", line), line


def test_json_format(tmp_path: Path) -> None:
    log = tmp_path / "agent.log"
    setup_logging("INFO", log_file=log, json_format=True, stream=False)
    logging.getLogger("x").info("launched %s", "i-1")
    logging.getLogger("x").debug("not at INFO")
    records = [json.loads(x) for x in log.read_text().splitlines()]
    assert len(records) == 1
    assert records[0]["message"] == "launched i-1" and records[0]["level"] == "INFO"


def test_secrets_are_redacted_everywhere(tmp_path: Path) -> None:
    log = tmp_path / "agent.log"
    setup_logging(log_file=log, stream=False)
    secret = "s3cr3t-agent-token-value"
    redact(secret)
    logger = logging.getLogger("x")
    logger.info("token is %s", secret)
    try:
        raise RuntimeError(f"failed with {secret}")
    except RuntimeError:
        logger.exception("boom")
    text = log.read_text()
    assert secret not in text
    assert text.count("***") >= 2
