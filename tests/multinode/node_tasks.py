"""Task types for the multi-node tests: each returns the id of the node it ran on."""

from __future__ import annotations

from typing import ClassVar

import ray

from rayqueue import Task


def _node() -> str:
    return str(ray.get_runtime_context().get_node_id())


class WhereDefault(Task[str]):
    """Runs in the default pool."""

    i: int = 0

    def execute(self) -> str:
        return _node()


class WhereReports(Task[str]):
    """Runs in the ``reports`` pool (nodes labelled pool=reports)."""

    pool: ClassVar[str] = "reports"
    i: int = 0

    def execute(self) -> str:
        return _node()


class WhereGpu(Task[str]):
    """Runs in the ``gpu`` pool (nodes with the custom ``gpu_slot`` resource)."""

    pool: ClassVar[str] = "gpu"
    i: int = 0

    def execute(self) -> str:
        return _node()
