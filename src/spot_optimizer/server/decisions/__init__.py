"""The server's decision loop: builds the engine's views from the database, runs `core.engine.decide`
for each workload, turns the actions into agent commands through the operator's command service, and
keeps prices and inventory fresh. Only the process holding the leader lease runs it.

Entry points live in `loop` (`run_decisions_once`, `wake`, `decision_loop`); this package's
`__init__` imports nothing so that `services` can import `results` without a cycle.
"""
