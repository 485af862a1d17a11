"""Benchmarks: each module exposes `run() -> str`, a markdown section for docs/benchmarks.md."""
