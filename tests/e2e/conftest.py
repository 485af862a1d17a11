"""End-to-end fixtures: the local stack (a real server process, the emulated region, real agent processes)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from spot_optimizer.demo.stack import LocalStack

# Agents in tests heartbeat and poll faster than the 5 s / 2 s defaults so tests finish quickly.
FAST_AGENT = ("--heartbeat-interval", "0.5", "--notice-poll-interval", "0.5")
FAST_SERVER = ("--heartbeat-interval", "0.5", "--command-lease", "5")


def make_stack(tmp: object, **kw: object) -> LocalStack:
    defaults: dict[str, object] = {"workloads": 1, "seed": 1, "speed": 1.0, "agent_args": FAST_AGENT,
                                   "server_flags": FAST_SERVER}
    defaults.update(kw)
    return LocalStack(tmp, **defaults)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def e2e(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with make_stack(tmp_path_factory.mktemp("e2e")) as stack:
        yield stack
