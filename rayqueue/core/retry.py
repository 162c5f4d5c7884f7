"""Retry policy: how many attempts, which errors retry, and how long to back off."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from rayqueue.errors import InvalidResultError

#: Longest retry delay a task may ask for (a year): beyond it, a typo.
MAX_RETRY_DELAY_S = 365 * 86_400.0


class Retry(Exception):
    """Raise from ``execute()`` to ask for a retry after ``delay`` seconds.

    The retry still counts an attempt and respects ``max_attempts``. ``delay`` must be
    finite seconds in [0, a year] (else :class:`~rayqueue.errors.InvalidResultError`,
    raised where ``Retry`` is built: the attempt fails with that error instead).
    """

    def __init__(self, delay: float | None = None, reason: str = "") -> None:
        self.delay = retry_delay(delay)
        self.reason = reason
        super().__init__(reason or f"retry requested (delay={delay})")

    def __reduce__(self) -> tuple[Any, ...]:
        return (Retry, (self.delay, self.reason))


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When and how a failed task is tried again.

    Attributes:
        max_attempts: attempts in all, the first included (1 = never retry).
        backoff: ``"exponential"`` (base * factor**(n-1)) or ``"fixed"`` (base).
        base_delay: seconds before the first retry.
        factor: growth per attempt for exponential backoff.
        max_delay: cap on any one delay.
        jitter: full jitter (uniform in ``[0, delay]``), as AWS recommends for herds.
        max_lost_attempts: attempts lost to a dying worker (or an expired lease)
            before the task is declared poison and goes to the dead letters.
        retry_on: exception types that retry (subclasses included). The default retries
            everything task code raises, ``SystemExit`` and ``KeyboardInterrupt`` too:
            the worker catches them, and they are failures of one attempt like others.
        dont_retry_on: exception types that never retry; checked first.
    """

    max_attempts: int = 3
    backoff: Literal["exponential", "fixed"] = "exponential"
    base_delay: float = 1.0
    factor: float = 2.0
    max_delay: float = 300.0
    jitter: bool = True
    max_lost_attempts: int = 3
    retry_on: tuple[type[BaseException], ...] = field(default=(BaseException,))
    dont_retry_on: tuple[type[BaseException], ...] = field(default=())

    def __post_init__(self) -> None:
        for name in ("max_attempts", "max_lost_attempts"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"RetryPolicy.{name} must be an int >= 1, got {value!r}")
        for name in ("base_delay", "factor", "max_delay"):
            value = getattr(self, name)
            if isinstance(value, bool) or not math.isfinite(value) or value < 0:
                raise ValueError(f"RetryPolicy.{name} must be a finite number >= 0, got {value!r}")
        if self.backoff not in ("exponential", "fixed"):
            raise ValueError(
                f"RetryPolicy.backoff must be 'exponential' or 'fixed', got {self.backoff!r}"
            )

    def is_retryable(self, exc: BaseException) -> bool:
        """Whether ``exc`` may be retried (a :class:`Retry` signal always may)."""
        if isinstance(exc, Retry):
            return True
        if self.dont_retry_on and isinstance(exc, self.dont_retry_on):
            return False
        return isinstance(exc, self.retry_on)

    def delay(self, attempt: int, rand: float = 1.0) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based).

        Args:
            attempt: the attempt that just failed.
            rand: a uniform number in [0, 1) used for full jitter; ignored without jitter.
        """
        if self.backoff == "fixed":
            raw = self.base_delay
        else:
            raw = self.base_delay * self.factor ** max(0, attempt - 1)
        capped = min(raw, self.max_delay)
        return capped * rand if self.jitter else capped

    def to_json(self) -> dict[str, Any]:
        """The numeric part of the policy, for storage (exception types stay in code)."""
        return {
            "max_attempts": self.max_attempts,
            "backoff": self.backoff,
            "base_delay": self.base_delay,
            "factor": self.factor,
            "max_delay": self.max_delay,
            "jitter": self.jitter,
            "max_lost_attempts": self.max_lost_attempts,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RetryPolicy:
        """Rebuild a policy stored with :meth:`to_json`."""
        return cls(**data)


def finite(x: Any) -> float | None:
    """``x`` as a finite float, or None (bools, strings, NaN, infinities, huge ints)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    try:
        value = float(x)
    except OverflowError:
        return None
    return value if math.isfinite(value) else None


def retry_delay(delay: object) -> float | None:
    """A retry delay as finite seconds in [0, a year], or :class:`InvalidResultError`."""
    if delay is None:
        return None
    value = finite(delay)
    if value is None or not 0 <= value <= MAX_RETRY_DELAY_S:
        raise InvalidResultError(
            f"retry delay must be finite seconds in [0, {MAX_RETRY_DELAY_S:.0f}], got "
            f"{delay!r:.80}")
    return value
