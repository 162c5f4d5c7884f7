"""Clocks: the one place the queue learns the time, and a fake one for tests."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """A source of time. ``now()`` is wall time in epoch seconds (UTC)."""

    def now(self) -> float:
        """Return the current wall time, epoch seconds."""
        ...


class SystemClock:
    """The real clock, read only by the actors' outer loops."""

    def now(self) -> float:
        """Return ``time.time()``."""
        return time.time()


class OffsetClock:
    """Real time plus an offset that only grows: a test hook to jump a live queue ahead.

    Time still flows; :meth:`advance` adds a jump (a cron due in five minutes fires
    now). Used through ``QueueActor.advance_clock`` in integration tests.
    """

    def __init__(self) -> None:
        self._offset = 0.0

    def now(self) -> float:
        """``time.time()`` plus the offset."""
        return time.time() + self._offset

    def advance(self, seconds: float) -> float:
        """Jump ahead by ``seconds`` and return the new time."""
        if seconds < 0:
            raise ValueError(f"a clock cannot go backwards (advance by {seconds})")
        self._offset += seconds
        return self.now()


class FakeClock:
    """A clock that moves only when told to; use it in your own tests.

    Example:
        >>> clock = FakeClock(1_000.0)
        >>> clock.advance(10)
        1010.0
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = float(start)

    def now(self) -> float:
        """Return the fake time."""
        return self._now

    def advance(self, seconds: float) -> float:
        """Move forward by ``seconds`` (never backwards) and return the new time."""
        if seconds < 0:
            raise ValueError(f"a clock cannot go backwards (advance by {seconds})")
        self._now += seconds
        return self._now

    def set(self, when: float) -> None:
        """Jump to ``when``, which must not be in the past."""
        if when < self._now:
            raise ValueError(f"a clock cannot go backwards ({when} < {self._now})")
        self._now = when
