"""Task types for the integration tests (pickled by value to the workers)."""

from __future__ import annotations

import os
import time
from typing import ClassVar

from rayqueue import Priority, RetryPolicy, Task
from rayqueue.task import current


def _attempt() -> int:
    ctx = current()
    return ctx.attempt if ctx is not None else 1


class Probe(Task[int]):
    """Returns ``value``; can sleep, fail its first attempts, or block its first attempt."""

    retry: ClassVar[RetryPolicy] = RetryPolicy(max_attempts=3, base_delay=0.1, factor=2.0,
                                               jitter=False, max_lost_attempts=3)

    value: int = 0
    sleep_s: float = 0.0
    fail_times: int = 0
    block_first_s: float = 0.0

    def execute(self) -> int:
        attempt = _attempt()
        if attempt == 1 and self.block_first_s:
            time.sleep(self.block_first_s)  # a long first attempt, to be killed mid-way
        if self.sleep_s:
            time.sleep(self.sleep_s)
        if attempt <= self.fail_times:
            raise RuntimeError(f"planned failure on attempt {attempt}")
        return self.value


class AsyncProbe(Task[str]):
    """An async task: runs on the worker's event loop."""

    text: str

    async def execute(self) -> str:
        return self.text.upper()


class Hung(Task[int]):
    """Hangs past its timeout on the first attempt (a blocking call), then succeeds."""

    timeout: ClassVar[float | None] = 1.5
    retry: ClassVar[RetryPolicy] = RetryPolicy(max_attempts=2, base_delay=0.1, jitter=False)

    def execute(self) -> int:
        if _attempt() == 1:
            time.sleep(120)
        return os.getpid()


class Manual(Task[str]):
    """Lives in a pool no worker serves: taken only with dequeue()."""

    pool: ClassVar[str] = "manual"

    name: str

    def execute(self) -> str:
        return f"hello {self.name}"


class Special(Task[str]):
    """Runs only in the pool whose workers hold the custom resource ``special``."""

    pool: ClassVar[str] = "special"
    priority: ClassVar[int] = Priority.HIGH

    def execute(self) -> str:
        ctx = current()
        return ctx.worker if ctx else ""


class NeedsGpu(Task[str]):
    """Runs only in the gpu pool, whose workers ask for a GPU this cluster lacks."""

    pool: ClassVar[str] = "gpu"

    def execute(self) -> str:
        return "ran on a GPU"


class Starts(Task[None]):
    """Appends ``tag`` and its pid to the file at ``path`` when it starts: one line per
    start, in the order the attempts started across every worker process (O_APPEND
    writes are atomic)."""

    path: str
    tag: str

    def execute(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, f"{self.tag} {os.getpid()}\n".encode())
        finally:
            os.close(fd)


class BadRetry(Task[float]):
    """Asks for a retry with a delay that is not seconds (``Retry`` refuses it), or
    returns NaN, which no JSON can hold: either way its own attempt fails."""

    retry: ClassVar[RetryPolicy] = RetryPolicy(max_attempts=1)

    mode: str = "retry"

    def execute(self) -> float:
        from rayqueue import Retry

        if self.mode == "retry":
            raise Retry(delay="soon")  # type: ignore[arg-type]
        return float("nan")


class TwoAtOnce(Task[list[float]]):
    """At most two run at once (the queue's limit); returns its (start, end) times."""

    concurrency_limit: ClassVar[int | None] = 2

    i: int

    def execute(self) -> list[float]:
        start = time.time()
        time.sleep(0.02)  # work that overlaps with other tasks if the limit lets it
        return [start, time.time()]


class Paced(Task[float]):
    """Leased at most 20 times a second (the queue's limit); returns its start time."""

    rate_limit: ClassVar[str | None] = "20/s"

    i: int

    def execute(self) -> float:
        return time.time()


def _note(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{line}\n".encode())
    finally:
        os.close(fd)


class AsyncWaits(Task[str]):
    """Notes ``start <pid>`` in ``path``, reports progress 0.5, then waits (to be
    cancelled: notes ``cancelled``)."""

    path: str

    async def execute(self) -> str:
        import asyncio

        _note(self.path, f"start {os.getpid()}")
        ctx = current()
        assert ctx is not None
        ctx.progress(0.5, "halfway")
        try:
            await asyncio.sleep(120)
        except asyncio.CancelledError:
            _note(self.path, "cancelled")
            raise
        return "done"


class CoopWaits(Task[str]):
    """Notes ``start <pid>``, reports progress 0.5, then loops until
    ``current().cancelled`` (notes ``saw-cancel``)."""

    path: str

    def execute(self) -> str:
        _note(self.path, f"start {os.getpid()}")
        ctx = current()
        assert ctx is not None
        ctx.progress(0.5, "halfway")
        end = time.monotonic() + 120
        while not ctx.cancelled and time.monotonic() < end:
            time.sleep(0.02)
        _note(self.path, "saw-cancel" if ctx.cancelled else "gave-up")
        return "stopped"


class HungWaits(Task[int]):
    """Notes ``start <pid>``, then sleeps, blind to any cancel."""

    path: str

    def execute(self) -> int:
        _note(self.path, f"start {os.getpid()}")
        time.sleep(600)
        return os.getpid()
