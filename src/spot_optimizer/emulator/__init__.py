"""The emulated AWS region: moto in server mode, a wire-protocol shim for prices and faults, a metadata
service per instance and an agent process per running instance.

Entry points: `spot_optimizer.emulator.region.EmulatedRegion` (Python API) and
`spot-optimizer emulator` (`spot_optimizer.emulator.cli`). Nothing is imported here, so that
`spot_optimizer.emulator.imds` stays cheap to import for the agent's tests.
"""
