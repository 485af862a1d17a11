"""`make bench`: run every benchmark and write docs/benchmarks.md (`python -m spot_optimizer.bench`).

Each benchmark module exposes `run() -> str` (a markdown section). `--only NAME` runs one of them.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

SECTIONS = ("backtest_bench", "reaction_bench", "agent_footprint_bench")
OUT = Path("docs/benchmarks.md")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", choices=SECTIONS, action="append", help="run only this benchmark")
    parser.add_argument("--out", type=Path, default=OUT, help="markdown file to write")
    args = parser.parse_args()
    parts = [
        "# Benchmarks",
        "",
        f"Written by `make bench` (`python -m spot_optimizer.bench`) on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; "
        f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} cores, "
        f"{platform.machine()}. Every figure below was measured by that run; nothing is edited by hand.",
        "",
    ]
    for name in args.only or SECTIONS:
        try:
            module = importlib.import_module(f"spot_optimizer.bench.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"spot_optimizer.bench.{name}":
                raise
            continue
        started = time.perf_counter()
        print(f"bench: running {name} ...", file=sys.stderr, flush=True)  # noqa: T201
        parts.append(module.run())
        print(f"bench: {name} done in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)  # noqa: T201
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(parts) + "\n")
    print(f"bench: wrote {args.out}", file=sys.stderr)  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
