"""Shared fixtures: where the shared reference data lives, and a skip when it is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"reference data folder {SHARED_DATA} is absent (it lives beside the project, not in it)")
    return SHARED_DATA


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """`--dist loadfile` (what `make test` asks for), scheduled by item index: see helpers/file_scheduling.py."""
    if config.getoption("dist") != "loadfile":
        return None
    from helpers.file_scheduling import FileScheduling

    return FileScheduling(config, log)  # type: ignore[arg-type]


# --- Reliability report -------------------------------------------------------------------------------
# Tests marked `@pytest.mark.reliability(fault="...", outcome="...")` each try one fault or hostile input.
# At the end of a session in which any of them ran, docs/reliability.md is (re)written from the results:
# rows of this run replace the rows of the same test; rows of tests that did not run this time are kept
# with the date of the run they come from.

import datetime as _dt  # noqa: E402
import re as _re  # noqa: E402

RELIABILITY_REPORT = PROJECT_ROOT / "docs" / "reliability.md"
_RELIABILITY_RESULTS: dict[str, dict[str, str]] = {}
_ROW = _re.compile(
    r"^\| (?P<fault>.*?) \| (?P<outcome>.*?) \| `(?P<test>[^`]+)` \| (?P<result>\w+) \| (?P<run>[^|]*) \|$"
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "reliability(fault, outcome): a fault or hostile input, reported in docs/reliability.md"
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    marker = item.get_closest_marker("reliability")
    if marker is None:
        return
    params = getattr(getattr(item, "callspec", None), "params", {})
    try:
        fault = str(marker.kwargs.get("fault", item.name)).format(**params)
    except (KeyError, IndexError, ValueError):
        fault = str(marker.kwargs.get("fault", item.name))
    # Carried on the report itself, so that under pytest-xdist the row reaches the controller with it.
    outcome.get_result().reliability = {"fault": fault, "outcome": str(marker.kwargs.get("outcome", ""))}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Runs where the session's reports are gathered: the only process, or the xdist controller."""
    described = getattr(report, "reliability", None)
    if not isinstance(described, dict):
        return
    row = _RELIABILITY_RESULTS.setdefault(report.nodeid, {
        "fault": str(described["fault"]),
        "outcome": str(described["outcome"]),
        "result": "passed",
    })
    if report.failed:
        row["result"] = "failed" if report.when == "call" else "error"
    elif report.skipped and row["result"] == "passed":
        row["result"] = "skipped"


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not _RELIABILITY_RESULTS or hasattr(session.config, "workerinput"):
        return
    run = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    rows: dict[str, dict[str, str]] = {}
    if RELIABILITY_REPORT.exists():
        for line in RELIABILITY_REPORT.read_text(encoding="utf-8").splitlines():
            match = _ROW.match(line)
            if match:
                rows[match["test"]] = match.groupdict()
    for nodeid, row in _RELIABILITY_RESULTS.items():
        rows[nodeid] = {"fault": _escape(row["fault"]), "outcome": _escape(row["outcome"]), "test": nodeid,
                        "result": row["result"], "run": run}
    counts: dict[str, int] = {}
    for row in rows.values():
        counts[row["result"]] = counts.get(row["result"], 0) + 1
    lines = [
        "# Reliability report",
        "",
        "Written by the test run (`tests/conftest.py`, marker `reliability`), not by hand: every fault and",
        "hostile input tried, the test that tries it, the outcome it asserts, and its result.",
        f"Last written {run}; {len(rows)} test(s): "
        + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) + ".",
        "",
        "| Fault / hostile input | Asserted outcome | Test | Result | Run |",
        "|---|---|---|---|---|",
    ]
    for nodeid in sorted(rows, key=lambda n: (n.split("::")[0], n)):
        row = rows[nodeid]
        lines.append(f"| {row['fault']} | {row['outcome']} | `{nodeid}` | {row['result']} | {row['run'].strip()} |")
    RELIABILITY_REPORT.parent.mkdir(parents=True, exist_ok=True)
    RELIABILITY_REPORT.write_text("\n".join(lines) + "\n", encoding="utf-8")
