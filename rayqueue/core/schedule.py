"""Pure schedule arithmetic: delays, interval and cron fire times, and misfire plans.

Every function takes the time it reasons about (``after``, ``now``) as float epoch seconds
UTC; nothing here reads the clock or imports Ray.

Cron and daylight saving time ("one run per calendar occurrence"): cron expressions are
matched against naive local wall-clock time, and each match becomes an instant with
``fold=0``. A wall time repeated at fall-back runs once, at its first occurrence, so an
hourly job runs 24 times on the fall-back day and no fire ever lands in the repeated hour's
second pass. A wall time skipped at spring-forward runs once, at the first instant after the
gap (``30 2 * * *`` in Europe/Berlin runs at 03:00 CEST); matches that collapse onto that
instant (``02:00``...``03:00`` of ``*/15 * * * *``) run once, so an hourly job runs 23 times
on the spring-forward day. Fire times are always strictly increasing.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from typing import Literal
from zoneinfo import ZoneInfo

from croniter import CroniterError, croniter

from rayqueue.errors import InvalidScheduleError, NaiveDatetimeError

__all__ = [
    "CronSpec",
    "FirePlan",
    "IntervalSpec",
    "MisfirePolicy",
    "ScheduleSpec",
    "delay_to_seconds",
    "interval",
    "misfire_policy",
    "next_fire",
    "plan_fires",
    "spec_from_json",
    "spec_to_json",
    "to_epoch",
]

#: Most cron candidates one search visits; a guard against a runaway loop, never hit in practice.
_MAX_STEPS = 10_000
#: Most on-time fires one plan runs; older ones count as missed.
_MAX_RUN_NOW = 1_000
#: How far past its bound a backward cron search starts; covers any DST shift (at most 2 h).
_DST_MARGIN = timedelta(hours=3)
#: Shortest interval of a new periodic schedule (see :func:`interval`).
MIN_INTERVAL_S = 0.1
#: Start of the probe that rejects cron expressions that never fire (e.g. ``0 0 30 2 *``).
_PROBE_START = datetime(2000, 1, 1)


class MisfirePolicy(str, Enum):
    """What to do with fires missed while the queue was down (older than the grace period)."""

    #: Drop missed fires; the next run is the next future occurrence.
    SKIP = "skip"
    #: Collapse all missed fires into one run now (the latest), then the next occurrence.
    RUN_ONCE = "run_once"


@dataclass(frozen=True, slots=True)
class IntervalSpec:
    """Fire every ``every`` seconds.

    Raises:
        InvalidScheduleError: ``every`` is not a finite number of seconds above zero.
    """

    every: float  #: seconds between fires
    kind: Literal["interval"] = field(default="interval", init=False)

    def __post_init__(self) -> None:
        every = self.every
        if not _is_number(every) or not math.isfinite(every) or every <= 0:
            raise InvalidScheduleError(
                f"invalid interval {every!r}: use a finite number of seconds above 0, e.g. 60.0"
            )
        object.__setattr__(self, "every", float(every))


@dataclass(frozen=True, slots=True)
class CronSpec:
    """Fire at the matches of a 5-field cron expression in a time zone.

    Raises:
        InvalidScheduleError: the expression is invalid or never fires, or the zone is unknown.
    """

    expr: str  #: minute hour day-of-month month day-of-week, e.g. ``"0 * * * *"``
    tz: str = "UTC"  #: IANA time zone name the expression is read in
    kind: Literal["cron"] = field(default="cron", init=False)

    def __post_init__(self) -> None:
        hint = "use 5 fields (minute hour day-of-month month day-of-week), e.g. '0 * * * *'"
        if not isinstance(self.expr, str) or len(self.expr.split()) != 5:
            raise InvalidScheduleError(f"invalid cron expression {self.expr!r}: {hint}")
        try:
            croniter(self.expr, _PROBE_START, datetime).get_next()
        except (CroniterError, TypeError) as err:
            raise InvalidScheduleError(
                f"invalid cron expression {self.expr!r} ({err}): {hint}"
            ) from err
        _zone(self.tz)


#: A schedule as stored with a task: a fixed interval or a cron expression.
ScheduleSpec = IntervalSpec | CronSpec


@dataclass(frozen=True, slots=True)
class FirePlan:
    """What a due schedule does now."""

    run_now: tuple[float, ...]  #: scheduled fire times to enqueue now, ascending
    next_due: float  #: when to look at the schedule again, after ``now``


def to_epoch(value: datetime) -> float:
    """Convert a timezone-aware datetime to epoch seconds.

    Raises:
        NaiveDatetimeError: ``value`` has no time zone.
        InvalidScheduleError: ``value`` is not a datetime.
    """
    if isinstance(value, datetime) and value.utcoffset() is None:
        raise NaiveDatetimeError(
            f"naive datetime {value!r}: use a timezone-aware one, e.g. "
            "datetime.now(timezone.utc) or datetime(..., tzinfo=ZoneInfo('Europe/Berlin'))"
        )
    if not isinstance(value, datetime):
        raise InvalidScheduleError(
            f"naive or non-datetime value {value!r}: use a timezone-aware datetime, "
            "e.g. datetime.now(timezone.utc)"
        )
    return value.timestamp()


def delay_to_seconds(delay: float | timedelta) -> float:
    """Convert a delay in seconds or a timedelta to seconds.

    Raises:
        InvalidScheduleError: the delay is negative, NaN, infinite (or an int too large
            for a float), a bool or not a number.
    """
    seconds = delay.total_seconds() if isinstance(delay, timedelta) else delay
    if not _is_number(seconds) or not _fits_float(seconds) or not math.isfinite(
            seconds) or seconds < 0:
        raise InvalidScheduleError(
            f"invalid delay {delay!r}: use a finite number of seconds >= 0 or a timedelta"
        )
    return float(seconds)


def interval(every: float | timedelta) -> IntervalSpec:
    """A periodic schedule's ``every=`` (seconds or a timedelta) as an interval.

    Stricter than :class:`IntervalSpec` (which also reads stored schedules): a new
    schedule fires at most every :data:`MIN_INTERVAL_S` seconds, since the queue looks
    at its timers every few tens of milliseconds and each run is a journaled task.

    Raises:
        InvalidScheduleError: not a finite number of seconds of at least MIN_INTERVAL_S.
    """
    seconds = every.total_seconds() if isinstance(every, timedelta) else every
    if not _is_number(seconds) or not _fits_float(seconds) or not (
            MIN_INTERVAL_S <= seconds < math.inf):
        raise InvalidScheduleError(
            f"invalid interval {every!r}: use a finite number of seconds of at least "
            f"{MIN_INTERVAL_S} (or a timedelta), e.g. every=60"
        )
    return IntervalSpec(float(seconds))


def misfire_policy(value: object) -> MisfirePolicy:
    """``value`` (a :class:`MisfirePolicy` or its name) as a policy.

    Raises:
        InvalidScheduleError: no policy of that name.
    """
    try:
        return MisfirePolicy(value)
    except ValueError as err:
        raise InvalidScheduleError(
            f"unknown misfire policy {value!r}: use 'skip' or 'run_once'"
        ) from err


def next_fire(spec: ScheduleSpec, after: float) -> float:
    """The first fire time strictly after ``after`` (an interval counts from ``after``).

    Raises:
        InvalidScheduleError: ``after`` is not finite, or the cron expression has no next match.
    """
    _check_finite("after", after)
    if isinstance(spec, IntervalSpec):
        return after + spec.every
    tz = _zone(spec.tz)
    # One second back absorbs microsecond rounding; the instant check below discards extras.
    it = croniter(spec.expr, _wall(after, tz) - timedelta(seconds=1), datetime)
    try:
        for _ in range(_MAX_STEPS):
            instant = _instant(it.get_next(), tz)
            if instant > after:
                return instant
    except CroniterError as err:
        raise InvalidScheduleError(
            f"cron {spec.expr!r} has no match after {after}: use an expression that fires again"
        ) from err
    raise InvalidScheduleError(
        f"cron {spec.expr!r} found no match after {after} in {_MAX_STEPS} steps: simplify it"
    )


def plan_fires(
    spec: ScheduleSpec,
    due: float,
    now: float,
    policy: MisfirePolicy,
    grace: float = 60.0,
) -> FirePlan:
    """Decide which fires of a due schedule run now, and when to look again.

    Fires in ``[due, now]`` with ``now - fire <= grace`` are on time and always run (the
    latest ``_MAX_RUN_NOW`` of them; older ones count as missed). Older fires were missed
    (the queue was down): ``SKIP`` drops them and runs only the on-time ones; ``RUN_ONCE``
    collapses every due fire, missed and on-time, into one run (the latest). An interval
    keeps its phase: ``next_due`` is ``due + k * every``; a cron's is ``next_fire(spec, now)``.

    Raises:
        InvalidScheduleError: a time is not finite, ``grace`` is negative or the policy unknown.
    """
    _check_finite("due", due)
    _check_finite("now", now)
    if not _is_number(grace) or not math.isfinite(grace) or grace < 0:
        raise InvalidScheduleError(f"invalid grace {grace!r}: use a finite number of seconds >= 0")
    policy = misfire_policy(policy)
    if due > now:
        return FirePlan((), due)
    fires: Iterable[float]  # fires in (due, now], latest first
    if isinstance(spec, IntervalSpec):
        last = max(0, math.floor((now - due) / spec.every))
        if due + last * spec.every > now:  # float rounding guards
            last -= 1
        if due + (last + 1) * spec.every <= now:
            last += 1
        fires = (due + k * spec.every for k in range(last, 0, -1))
        next_due = due + (last + 1) * spec.every
    else:
        fires = itertools.takewhile(lambda f: f > due, _cron_fires_desc(spec, now))
        next_due = next_fire(spec, now)
    cutoff = now - grace
    on_time: list[float] = []
    missed: list[float] = []
    for fire in itertools.chain(fires, (due,)):
        if fire < cutoff or len(on_time) == _MAX_RUN_NOW:
            missed.append(fire)
            break
        on_time.append(fire)
    if missed and policy is MisfirePolicy.RUN_ONCE:
        # An outage: everything due collapses into one run, as APScheduler's coalesce.
        return FirePlan(((on_time or missed)[0],), next_due)
    return FirePlan(tuple(on_time[::-1]), next_due)


def spec_to_json(spec: ScheduleSpec) -> dict[str, object]:
    """A JSON-ready dict of ``spec``; :func:`spec_from_json` reads it back."""
    if isinstance(spec, IntervalSpec):
        return {"kind": spec.kind, "every": spec.every}
    return {"kind": spec.kind, "expr": spec.expr, "tz": spec.tz}


def spec_from_json(d: Mapping[str, object]) -> ScheduleSpec:
    """Rebuild a spec from :func:`spec_to_json` output, validating it again.

    Raises:
        InvalidScheduleError: the kind is unknown or a field is invalid.
    """
    kind = d.get("kind")
    if kind == "interval":
        return IntervalSpec(d.get("every"))  # type: ignore[arg-type]  # validated on init
    if kind == "cron":
        return CronSpec(d.get("expr"), d.get("tz", "UTC"))  # type: ignore[arg-type]
    raise InvalidScheduleError(f"unknown schedule kind {kind!r}: use 'interval' or 'cron'")


def _is_number(value: object) -> bool:
    """An int or float, not a bool, that a float can hold (so math.isfinite and
    arithmetic on it never raise OverflowError: 10**400 is refused like NaN)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and _fits_float(
        value)


def _fits_float(value: float) -> bool:
    """False for an int too large for a float (10**400), whose comparisons would work
    but whose arithmetic would raise OverflowError later."""
    try:
        float(value)
    except OverflowError:
        return False
    return True


def _check_finite(name: str, value: float) -> None:
    if not _is_number(value) or not math.isfinite(value):
        raise InvalidScheduleError(f"invalid {name} {value!r}: use finite epoch seconds (UTC)")


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (KeyError, ValueError, TypeError, OSError) as err:
        raise InvalidScheduleError(
            f"unknown time zone {name!r}: use an IANA name such as 'UTC' or 'Europe/Berlin'"
        ) from err


def _wall(instant: float, tz: ZoneInfo) -> datetime:
    """The naive local wall time of an instant."""
    return datetime.fromtimestamp(instant, tz).replace(tzinfo=None)


def _instant(wall: datetime, tz: ZoneInfo) -> float:
    """The instant of a wall time: its first occurrence, or the end of the gap it falls in."""
    instant = wall.replace(tzinfo=tz, fold=0).timestamp()
    if _wall(instant, tz) == wall:
        return instant
    # A gap: the end of the gap is the first instant whose wall time is later than ``wall``.
    # The two folds give the offsets before and after the transition, which bracket it.
    other = wall.replace(tzinfo=tz, fold=1).timestamp()
    lo, hi = math.floor(min(instant, other)), math.ceil(max(instant, other))
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _wall(mid, tz) > wall:
            hi = mid
        else:
            lo = mid
    return float(hi)


def _cron_fires_desc(spec: CronSpec, upto: float) -> Iterator[float]:
    """Cron fire times at or before ``upto``, latest first, each once."""
    tz = _zone(spec.tz)
    it = croniter(spec.expr, _wall(upto, tz) + _DST_MARGIN, datetime)
    previous = math.inf
    for _ in range(_MAX_STEPS):
        try:
            instant = _instant(it.get_prev(), tz)
        except CroniterError:
            return
        if instant <= upto and instant < previous:
            previous = instant
            yield instant
