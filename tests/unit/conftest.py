"""Fixtures for the pure core: a fake clock and a queue core on in-memory storage."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from rayqueue import FakeClock, InMemoryStorage, NewTask, QueueConfig, QueueCore, RetryPolicy

T0 = 1_800_000_000.0

NO_JITTER = RetryPolicy(max_attempts=4, base_delay=10.0, factor=2.0, jitter=False)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def storage() -> InMemoryStorage:
    return InMemoryStorage()


@pytest.fixture
def make_core(storage: InMemoryStorage) -> Callable[..., QueueCore]:
    def make(**config: object) -> QueueCore:
        return QueueCore(QueueConfig(**config), storage, rng=random.Random(7))  # type: ignore[arg-type]

    return make


@pytest.fixture
def core(make_core: Callable[..., QueueCore]) -> QueueCore:
    return make_core()


def new(
    name: str = "t",
    payload: str = "{}",
    priority: int = 50,
    *,
    task_id: str | None = None,
    run_at: float | None = None,
    retry: RetryPolicy = NO_JITTER,
    timeout: float | None = None,
    pool: str = "default",
) -> NewTask:
    return NewTask(name, payload, priority, pool=pool, run_at=run_at, task_id=task_id,
                   retry=retry, timeout=timeout)
