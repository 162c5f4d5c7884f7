"""Test configuration shared by every suite."""

from __future__ import annotations

import pytest

pytest_plugins = ["tests.ray_fixtures", "tests.skips", "tests.pg", "pytester"]

#: The multi-node group's modules, in the order they run. pytest-xdist's work stealing
#: hands each of the group's two processes a contiguous half of the tests (4 and 5 of
#: 9) and then moves tests from a half's end: the two longest (the chaos soak, ~85-105 s,
#: and the demo as a Ray job, ~60 s) head different halves, each half about 170 s. In
#: file order both fell in the first half and its process ended ~30 s after the other.
MULTINODE_ORDER = ("test_chaos.py", "test_placement.py", "test_node_loss.py",
                   "test_gcs_outage.py", "test_jobs.py", "test_journal_node.py",
                   "test_postgres_node.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Put the multi-node tests in :data:`MULTINODE_ORDER` (a module not named there
    goes last); every other test keeps its place. A module's tests stay together, so
    its cluster fixture is made once."""

    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return MULTINODE_ORDER.index(name) if name in MULTINODE_ORDER else len(
            MULTINODE_ORDER)

    slots = [n for n, item in enumerate(items) if item.get_closest_marker("multinode")]
    for n, item in zip(slots, sorted([items[n] for n in slots], key=rank), strict=True):
        items[n] = item
