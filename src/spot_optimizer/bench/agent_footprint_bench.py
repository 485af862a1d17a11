"""Agent idle footprint: RSS and CPU of one real agent process on the emulated region, at its defaults
(2 s notice polling, 5 s heartbeats), sampled from /proc while nothing happens."""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

from spot_optimizer.demo.stack import LocalStack

SAMPLE_S = 60.0
WARMUP_S = 10.0
TICKS = os.sysconf("SC_CLK_TCK")


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def measure(sample_s: float = SAMPLE_S) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-footprint-") as tmp, \
            LocalStack(Path(tmp), workloads=1, seed=3) as stack:
        primary = next(iter(stack.region.seed.primaries.values()))
        stack.wait_agent(primary)
        proc = stack.region.runtime.get(primary)
        pid = proc.pid
        time.sleep(WARMUP_S)
        rss: list[int] = []
        start_ticks, start = _cpu_ticks(pid), time.monotonic()
        while time.monotonic() - start < sample_s:
            rss.append(_rss_kib(pid))
            time.sleep(1.0)
        cpu_pct = 100.0 * (_cpu_ticks(pid) - start_ticks) / TICKS / (time.monotonic() - start)
        return {"rss_mib_median": statistics.median(rss) / 1024, "rss_mib_max": max(rss) / 1024,
                "cpu_pct": cpu_pct, "sample_s": sample_s}


def run() -> str:
    m = measure()
    return (
        "## Agent idle footprint\n\n"
        f"One `spot-optimizer agent` process on the emulated region, defaults (notice poll 2 s, heartbeat 5 s), "
        f"sampled once a second for {m['sample_s']:.0f} s after {WARMUP_S:.0f} s of warm-up.\n\n"
        "| RSS median MiB | RSS max MiB | CPU % (of one core) |\n| ---: | ---: | ---: |\n"
        f"| {m['rss_mib_median']:.1f} | {m['rss_mib_max']:.1f} | {m['cpu_pct']:.2f} |\n\n"
        "```\npython -m spot_optimizer.bench --only agent_footprint_bench\n```\n"
    )


if __name__ == "__main__":
    print(run())  # noqa: T201
