"""The whole system on one machine: a server process, the emulated region and its agents (demo, e2e, bench)."""
