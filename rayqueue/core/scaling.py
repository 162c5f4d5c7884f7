"""Decide how many workers a pool should run from its backlog, with delays and bounds.

The policy is pure: it never reads the clock and imports nothing from Ray. The pool
manager calls :meth:`ScalingPolicy.decide` on every tick with the time it read, and
acts on the answer (start workers, or drain some).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["ScalingConfig", "ScalingDecision", "ScalingPolicy"]

#: Relative slack on ``demand / target`` so that float noise
#: (``7 / 0.7 == 10.000000000000002``) does not ask for one worker too many.
_CEIL_SLACK = 1e-9


def _check_count(name: str, value: object) -> None:
    # bool is an int subclass; ``min_workers=True`` is a bug, not a count.
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be an int >= 0, got {value!r}")


def _check_seconds(name: str, value: object, *, positive: bool = False) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or (value <= 0 if positive else value < 0)
    ):
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")


@dataclass(frozen=True, slots=True)
class ScalingConfig:
    """How one pool scales.

    Raises:
        ValueError: A field is out of range; the message names the field and its value.
    """

    min_workers: int = 0  #: The pool never runs fewer workers than this.
    max_workers: int = 4  #: The pool never runs more workers than this; at least 1.
    #: Ready backlog plus in-flight tasks that one worker should carry.
    target_tasks_per_worker: float = 8.0
    #: Demand must stay above the current count this long before scaling up.
    upscale_delay_s: float = 0.0
    #: Demand must stay below the current count this long before scaling down.
    downscale_delay_s: float = 10.0

    def __post_init__(self) -> None:
        _check_count("min_workers", self.min_workers)
        _check_count("max_workers", self.max_workers)
        if self.max_workers < 1:
            raise ValueError(f"max_workers must be >= 1, got {self.max_workers!r}")
        if self.min_workers > self.max_workers:
            raise ValueError(
                f"min_workers ({self.min_workers!r}) must be <= max_workers ({self.max_workers!r})"
            )
        _check_seconds("target_tasks_per_worker", self.target_tasks_per_worker, positive=True)
        _check_seconds("upscale_delay_s", self.upscale_delay_s)
        _check_seconds("downscale_delay_s", self.downscale_delay_s)


@dataclass(frozen=True, slots=True)
class ScalingDecision:
    """What the pool should do now."""

    desired: int  #: Worker count the pool should run now.
    raw: int  #: What demand alone asks for, clipped to ``[min_workers, max_workers]``.
    #: Why: ``steady``, ``cold_start``, ``scale_up``, ``scale_down``, ``waiting_up``,
    #: ``waiting_down`` or ``bounds``.
    reason: str


class ScalingPolicy:
    """Turns backlog and in-flight counts into a desired worker count, with hysteresis.

    As Ray Serve's autoscaler does, a change of direction must persist for the configured
    delay before it is acted on, so a brief dip or spike does not move the pool. The one
    piece of state is when demand started to sit above (or below) the current count; it
    is forgotten when demand meets the current count, flips direction, or the current
    count changes (the pool acted, so the next change must persist afresh).

    Args:
        config: Bounds, target load per worker and delays.
    """

    def __init__(self, config: ScalingConfig) -> None:
        self._config = config
        self._direction = 0  # +1 demand above current, -1 below, 0 no timer running
        self._since = 0.0
        self._base = 0  # the current count when the timer started

    @property
    def config(self) -> ScalingConfig:
        """The configuration this policy applies."""
        return self._config

    def decide(self, *, backlog: int, in_flight: int, current: int, now: float,
               warm: bool = False) -> ScalingDecision:
        """Decide the worker count for this tick.

        Args:
            backlog: Tasks ready to run and not yet claimed.
            in_flight: Tasks claimed by workers and not yet finished.
            current: Workers the pool runs or is starting (its present target).
            now: The caller's clock, in seconds; non-decreasing across calls.
            warm: keep at least one worker (within ``max_workers``), e.g. because a
                periodic schedule of the pool is due soon: a cold start (seconds) would
                make its run late.

        Returns:
            The desired count, what demand alone asks for, and why.

        Raises:
            ValueError: A count is negative, or ``now`` is not finite.
        """
        _check_count("backlog", backlog)
        _check_count("in_flight", in_flight)
        _check_count("current", current)
        if not math.isfinite(now):
            raise ValueError(f"now must be finite, got {now!r}")
        cfg = self._config
        raw = self._raw(backlog + in_flight)
        if warm and raw == 0 and cfg.max_workers > 0:
            raw = 1
            if current == 0:
                return self._act(1, 1, "warm_for_schedule")
        if current == 0 and backlog > 0:
            # Nobody can claim the work, so waiting would only add latency.
            return self._act(raw, raw, "cold_start")
        if not cfg.min_workers <= current <= cfg.max_workers:
            return self._act(min(max(current, cfg.min_workers), cfg.max_workers), raw, "bounds")
        if raw == current:
            return self._act(current, raw, "steady")
        direction = 1 if raw > current else -1
        if direction != self._direction or current != self._base:
            self._direction, self._since, self._base = direction, now, current
        delay = cfg.upscale_delay_s if direction > 0 else cfg.downscale_delay_s
        if now - self._since >= delay:
            return ScalingDecision(raw, raw, "scale_up" if direction > 0 else "scale_down")
        return ScalingDecision(current, raw, "waiting_up" if direction > 0 else "waiting_down")

    def _raw(self, demand: int) -> int:
        cfg = self._config
        # Compare before dividing: a huge int would overflow the float division.
        if demand >= cfg.max_workers * cfg.target_tasks_per_worker:
            return cfg.max_workers
        wanted = math.ceil(demand / cfg.target_tasks_per_worker * (1 - _CEIL_SLACK))
        return min(max(wanted, cfg.min_workers), cfg.max_workers)

    def _act(self, desired: int, raw: int, reason: str) -> ScalingDecision:
        self._direction = 0
        return ScalingDecision(desired, raw, reason)
