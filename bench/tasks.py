"""Task types the benchmarks run: no work, a sleep, and a timestamp."""

from __future__ import annotations

import time
from typing import ClassVar

from rayqueue import Task


class NoopTask(Task[None]):
    """Does nothing: measures the queue, not the work."""

    task_name: ClassVar[str] = "bench.noop"

    i: int = 0
    priority_hint: int = 0

    def execute(self) -> None:
        return None


class SleepTask(Task[None]):
    """Blocks its slot for ``ms`` milliseconds, as an I/O call would."""

    task_name: ClassVar[str] = "bench.sleep"

    ms: float = 10.0

    def execute(self) -> None:
        time.sleep(self.ms / 1000)  # the simulated I/O itself


class StampTask(Task[float]):
    """Returns the wall-clock time its execution started (for lateness)."""

    task_name: ClassVar[str] = "bench.stamp"

    due: float = 0.0

    def execute(self) -> float:
        return time.time()
