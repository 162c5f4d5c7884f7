"""Task types the benchmarks run: no work, a sleep, and a timestamp."""

from __future__ import annotations

import time
from typing import Any, ClassVar

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


_CLIENTS: dict[int, Any] = {}


def redis_client(port: int) -> Any:
    """This process's client of the bench's redis-server (one connection, reused)."""
    client = _CLIENTS.get(port)
    if client is None:
        import redis  # the bench extra; only the realistic family needs it

        client = _CLIENTS[port] = redis.Redis(host="127.0.0.1", port=port)
    return client


class RedisTask(Task[None]):
    """One round trip to a local redis-server (RPUSH to ``key``), as a task that writes
    a row or calls a service does: the realistic body, the same for every peer."""

    task_name: ClassVar[str] = "bench.redis"

    port: int
    key: str
    ms: float = 0.0
    #: what is pushed (the order of the list is the order tasks finished)
    tag: str = "1"

    def execute(self) -> None:
        if self.ms:
            time.sleep(self.ms / 1000)  # simulated I/O before the write
        redis_client(self.port).rpush(self.key, self.tag)
