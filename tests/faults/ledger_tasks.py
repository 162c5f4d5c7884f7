"""Task types of the fault suite: each attempt writes itself to the execution ledger."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time
from typing import Any, ClassVar

from pydantic import ConfigDict, Field

from rayqueue import RetryPolicy, Task
from rayqueue.task import current
from tests.faults import ledger

#: Fault-suite defaults (RELIABILITY.md 6.1): max_attempts=5, max_lost_attempts=3.
POLICY = RetryPolicy(max_attempts=5, max_lost_attempts=3, base_delay=0.05, max_delay=0.5,
                     jitter=True)


class Work(Task[int]):
    """Sleeps ``seconds`` (longer on a first attempt if asked) and returns ``value``.

    ``how`` makes an attempt misbehave: ``os_exit``, ``sigkill``, ``sys_exit``,
    ``keyboard``, ``system_exit``, ``hang``, ``leak``, ``base_exc``, ``bad_reduce``,
    ``lock_exc``, ``huge_msg``; ``how_times`` bounds on how many first attempts.
    ``distinct``: return ``value * 1000 + attempt``, so that the result shows which
    attempt's ack the queue kept (a zombie's late ack would be visible).
    """

    retry: ClassVar[RetryPolicy] = POLICY

    ledger: str
    value: int = 0
    seconds: float = 0.0
    first_seconds: float = 0.0
    how: str = ""
    how_times: int = 1_000
    distinct: bool = False

    def execute(self) -> int:
        ctx = current()
        assert ctx is not None
        row = ledger.start(self.ledger, ctx.task_id, ctx.attempt, ctx.worker)
        try:
            if ctx.attempt <= self.how_times and self.how:
                _misbehave(self.how)
            prior = ledger.starts(self.ledger, ctx.task_id) - 1
            time.sleep(self.first_seconds if prior == 0 and self.first_seconds else self.seconds)
        except BaseException:
            ledger.end(self.ledger, row, "error")
            raise
        result = self.value * 1000 + ctx.attempt if self.distinct else self.value
        ledger.end(self.ledger, row, "ok", result)
        return result


class Hangs(Work):
    """A Work whose attempts time out after 1 s; two attempts in all."""

    timeout: ClassVar[float | None] = 1.0
    retry: ClassVar[RetryPolicy] = RetryPolicy(max_attempts=2, base_delay=0.05, jitter=False)


_LEAK: list[bytes] = []


class CustomBase(BaseException):
    """A BaseException that is neither Exception nor a system exit."""


class BadReduce(Exception):
    """An exception that cannot be pickled: its __reduce__ raises."""

    def __reduce__(self) -> Any:
        raise TypeError("no pickling for you")


class HoldsLock(Exception):
    """An exception carrying an unpicklable lock."""

    def __init__(self) -> None:
        super().__init__("holding a lock")
        self.lock = threading.Lock()


def _misbehave(how: str) -> None:
    if how == "os_exit":
        os._exit(1)
    if how == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    if how == "sys_exit":
        sys.exit(1)
    if how == "keyboard":
        raise KeyboardInterrupt
    if how == "system_exit":
        raise SystemExit(2)
    if how == "hang":
        time.sleep(600)
    if how == "leak":
        _LEAK.append(b"x" * 50 * 2**20)
        return
    if how == "base_exc":
        raise CustomBase("custom base exception")
    if how == "bad_reduce":
        raise BadReduce("reduce raises")
    if how == "lock_exc":
        raise HoldsLock
    if how == "huge_msg":
        raise ValueError("x" * 50 * 2**20)
    if how == "fail":
        raise RuntimeError("planned failure")
    raise ValueError(f"unknown misbehaviour {how!r}")


class AsyncGenExit(Task[int]):
    """An async task that raises GeneratorExit."""

    retry: ClassVar[RetryPolicy] = RetryPolicy(max_attempts=1)

    async def execute(self) -> int:
        await asyncio.sleep(0)
        raise GeneratorExit


class SlowRetry(Work):
    """A Work whose retries wait an hour: it stays in the retry wait during a test."""

    retry: ClassVar[RetryPolicy] = RetryPolicy(max_attempts=3, base_delay=3_600, jitter=False)


class Strict(Task[int]):
    """A strict model: no coercion ("1" is not an int), bounded list."""

    model_config = ConfigDict(strict=True)

    count: int
    ratio: float = 1.0
    tags: list[str] = Field(default_factory=list, max_length=1_000)

    def execute(self) -> int:
        return self.count


class Anything(Task[int]):
    """A payload of any shape: only JSON-serializable values get through."""

    data: Any = None

    def execute(self) -> int:
        return 0


class SchemaV1(Task[int]):
    """Version 1 of a task type whose schema changes under queued tasks."""

    task_name: ClassVar[str] = "faults.schema_change"
    pool: ClassVar[str] = "schema"

    amount: int

    def execute(self) -> int:
        return self.amount


def schema_v2() -> type[Task[int]]:
    """Version 2: ``amount`` became ``cents`` (a breaking change)."""

    class SchemaV2(Task[int]):
        __qualname__ = "SchemaV1"  # the same class, redeployed with a new schema
        task_name: ClassVar[str] = "faults.schema_change"
        pool: ClassVar[str] = "schema"

        cents: int

        def execute(self) -> int:
            return self.cents

    return SchemaV2
