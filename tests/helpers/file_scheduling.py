"""`--dist loadfile` for pytest-xdist, keyed by item index instead of node id.

xdist's own loadfile scheduler keys its work by node id. With pytest 9 every operation schemathesis generates
(tests/integration/test_schemathesis_api.py) gets the same node id, so that scheduler runs one of them and
silently drops the others. This one does the same job by index: each test file goes whole to one worker (its
module-scoped stacks start once), files in collection order (the heavy e2e modules first), and a worker is
given the next file when it has two tests or fewer left, as xdist's loadscope schedulers do.
"""

from __future__ import annotations

from typing import Any

from xdist.scheduler import LoadScheduling


def _file_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


class FileScheduling(LoadScheduling):
    def schedule(self) -> None:
        assert self.collection_is_completed
        if self.collection is not None:  # a worker was added or restarted
            for node in self.nodes:
                self.check_schedule(node)
            return
        if not self._check_nodes_have_same_collection():
            self.log("**Different tests collected, aborting run**")
            return
        self.collection = next(iter(self.node2collection.values()))
        self.pending[:] = range(len(self.collection))
        if not self.collection:
            return
        for node in self.nodes:
            if self.pending:
                self._send_file(node)
        for node in self.nodes:
            self.check_schedule(node)

    def check_schedule(self, node: Any, duration: float = 0) -> None:
        if node.shutting_down:
            return
        if not self.pending:
            node.shutdown()
            return
        # A worker starts a test only once it knows the next one (or is told to shut down): keep two queued.
        if len(self.node2pending[node]) <= 2:
            self._send_file(node)
            while self.pending and len(self.node2pending[node]) < 2:
                self._send_file(node)

    def _send_file(self, node: Any) -> None:
        assert self.collection is not None
        name = _file_of(self.collection[self.pending[0]])
        batch = [i for i in self.pending if _file_of(self.collection[i]) == name]
        self.pending[:] = [i for i in self.pending if _file_of(self.collection[i]) != name]
        self.node2pending[node].extend(batch)
        node.send_runtest_some(batch)
