"""FaultyStorage: a Storage wrapper that makes writes fail at chosen rates, for chaos tests."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping, Sequence
from types import MappingProxyType

from rayqueue.core.record import ScheduleRecord, TaskRecord
from rayqueue.errors import StorageBusyError, StorageError, StorageFullError
from rayqueue.storage.base import Storage, StoredState

#: Fault kinds, in the order a draw tries them. All but the last leave the journal as it
#: was; ``execute_and_timeout`` applies the write and then reports an error, the worst case
#: for a caller (committed, yet told it failed), as Temporal's fault injection has it.
FAULT_KINDS = ("busy", "full", "ioerr", "timeout", "execute_and_timeout")

_NO_FAULTS: Mapping[str, float] = MappingProxyType({})


class FaultyStorage:
    """Wraps a Storage and injects write errors, each kind at its own rate per write.

    One draw from ``rng`` per write picks at most one fault, so runs with the same seed
    fail the same writes. ``load`` and ``close`` pass through untouched.

    Args:
        inner: the storage that really keeps the records.
        rng: the source of the draws (seed it for a reproducible run).
        faults: rate (probability per write) by kind from :data:`FAULT_KINDS`; the rates
            may sum to at most 1.
        max_faults: stop injecting after this many faults in all (``None`` = no cap).

    Attributes:
        injected: faults injected so far, by kind.
        armed: set to ``False`` to pass every write through (e.g. to drain a test).

    Raises:
        ValueError: an unknown kind, a rate outside [0, 1], rates summing above 1, or a
            negative ``max_faults``.
    """

    def __init__(
        self,
        inner: Storage,
        *,
        rng: random.Random,
        faults: Mapping[str, float] = _NO_FAULTS,
        max_faults: int | None = None,
    ) -> None:
        unknown = set(faults) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}: use {FAULT_KINDS}")
        if any(not 0.0 <= rate <= 1.0 for rate in faults.values()) or sum(faults.values()) > 1:
            raise ValueError(f"fault rates must be in [0, 1] and sum to at most 1: {faults}")
        if max_faults is not None and max_faults < 0:
            raise ValueError(f"max_faults must be None or >= 0, got {max_faults}")
        self.inner = inner
        self._rng = rng
        self._rates = [(kind, faults.get(kind, 0.0)) for kind in FAULT_KINDS]
        self._max_faults = max_faults
        self.injected: Counter[str] = Counter()
        self.armed = True

    def load(self) -> StoredState:
        """Load from the inner storage."""
        return self.inner.load()

    def write(
        self,
        *,
        tasks: Sequence[TaskRecord] = (),
        schedules: Sequence[ScheduleRecord] = (),
        delete_tasks: Sequence[str] = (),
        delete_schedules: Sequence[str] = (),
    ) -> None:
        """Write through to the inner storage, unless a fault is drawn.

        Raises:
            StorageBusyError: fault ``busy`` (nothing written).
            StorageFullError: fault ``full`` (nothing written).
            StorageError: fault ``ioerr`` or ``timeout`` (nothing written), or
                ``execute_and_timeout`` (the batch *was* written).
        """
        kind = self._draw()
        if kind is None or kind == "execute_and_timeout":
            self.inner.write(tasks=tasks, schedules=schedules, delete_tasks=delete_tasks,
                             delete_schedules=delete_schedules)
        if kind is None:
            return
        self.injected[kind] += 1
        if kind == "busy":
            raise StorageBusyError("injected fault: the journal is locked (busy)")
        if kind == "full":
            raise StorageFullError("injected fault: database or disk is full")
        if kind == "ioerr":
            raise StorageError("injected fault: disk I/O error")
        # "timeout" and "execute_and_timeout": the caller cannot tell them apart.
        raise StorageError("injected fault: journal write timed out")

    def close(self) -> None:
        """Close the inner storage."""
        self.inner.close()

    def _draw(self) -> str | None:
        cap = self._max_faults
        if not self.armed or (cap is not None and sum(self.injected.values()) >= cap):
            return None
        point = self._rng.random()
        for kind, rate in self._rates:
            if point < rate:
                return kind
            point -= rate
        return None
