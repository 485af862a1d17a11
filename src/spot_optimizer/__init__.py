"""Spot Optimizer: run EC2 workloads on spot capacity and keep them available through interruptions."""

__version__ = "0.1.0"
