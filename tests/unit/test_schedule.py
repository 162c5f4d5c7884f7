"""Unit tests for rayqueue.core.schedule: pure time arithmetic, no clock, no Ray."""

from __future__ import annotations

import itertools
import math
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rayqueue.core.schedule import (
    CronSpec,
    FirePlan,
    IntervalSpec,
    MisfirePolicy,
    ScheduleSpec,
    delay_to_seconds,
    next_fire,
    plan_fires,
    spec_from_json,
    spec_to_json,
    to_epoch,
)
from rayqueue.errors import InvalidScheduleError

BERLIN = "Europe/Berlin"


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> float:
    """Epoch seconds of a UTC calendar time."""
    return datetime(year, month, day, hour, minute, second, tzinfo=timezone.utc).timestamp()


def fires(spec: ScheduleSpec, start: float, end: float) -> list[float]:
    """All fire times in (start, end], by repeated next_fire."""
    out: list[float] = []
    t = next_fire(spec, start)
    while t <= end:
        out.append(t)
        t = next_fire(spec, t)
    return out


def assert_strictly_increasing(times: list[float]) -> None:
    assert all(a < b for a, b in itertools.pairwise(times))


# --- intervals, delays, datetimes -------------------------------------------------------


def test_interval_next_fire_counts_from_after() -> None:
    spec = IntervalSpec(30)
    assert spec.every == 30.0
    assert next_fire(spec, 100.0) == 130.0
    assert fires(spec, 0.0, 100.0) == [30.0, 60.0, 90.0]


@pytest.mark.parametrize("every", [0, -1, math.nan, math.inf, True, "60", None])
def test_interval_rejects_bad_every(every: object) -> None:
    with pytest.raises(InvalidScheduleError, match="invalid interval"):
        IntervalSpec(every)  # type: ignore[arg-type]


@given(
    every=st.floats(min_value=1e-3, max_value=1e7),
    after=st.floats(min_value=-1e10, max_value=1e10),
)
def test_interval_next_fire_property(every: float, after: float) -> None:
    fire = next_fire(IntervalSpec(every), after)
    assert fire > after
    # after + every is rounded to the nearest float; allow that one rounding step.
    assert fire - after <= every + math.ulp(fire)


def test_to_epoch_aware_and_naive() -> None:
    assert to_epoch(datetime(2026, 1, 1, tzinfo=timezone.utc)) == utc(2026, 1, 1)
    plus_two = timezone(timedelta(hours=2))
    assert to_epoch(datetime(2026, 1, 1, 2, tzinfo=plus_two)) == utc(2026, 1, 1)
    with pytest.raises(InvalidScheduleError, match="timezone-aware"):
        to_epoch(datetime(2026, 1, 1))


def test_delay_to_seconds() -> None:
    assert delay_to_seconds(0) == 0.0
    assert delay_to_seconds(1.5) == 1.5
    assert delay_to_seconds(timedelta(minutes=2)) == 120.0


@pytest.mark.parametrize("delay", [-1, -0.5, math.nan, math.inf, True, False, "5", None,
                                   10**400, -(10**400)],  # (big ints: OverflowError before)
                         ids=lambda v: repr(v)[:12])
def test_delay_to_seconds_rejects(delay: object) -> None:
    with pytest.raises(InvalidScheduleError, match="invalid delay"):
        delay_to_seconds(delay)  # type: ignore[arg-type]
    with pytest.raises(InvalidScheduleError):
        delay_to_seconds(timedelta(seconds=-1))


# --- cron ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "expr", ["61 * * * *", "not a cron", "* * *", "", "* * * * * *", "0 0 30 2 *"]
)
def test_cron_rejects_invalid_expression(expr: str) -> None:
    with pytest.raises(InvalidScheduleError, match="invalid cron expression"):
        CronSpec(expr)


@pytest.mark.parametrize("tz", ["Mars/Olympus", "", "Europe", "../etc/passwd"])
def test_cron_rejects_unknown_zone(tz: str) -> None:
    with pytest.raises(InvalidScheduleError, match="unknown time zone"):
        CronSpec("0 * * * *", tz)


def test_cron_daily_utc_is_strictly_after() -> None:
    spec = CronSpec("0 9 * * *")
    assert next_fire(spec, utc(2026, 1, 1, 8)) == utc(2026, 1, 1, 9)
    assert next_fire(spec, utc(2026, 1, 1, 9)) == utc(2026, 1, 2, 9)
    assert next_fire(spec, utc(2026, 1, 1, 9) - 0.25) == utc(2026, 1, 1, 9)
    assert next_fire(CronSpec("0 9 * * *", "Asia/Tokyo"), utc(2026, 1, 1)) == utc(2026, 1, 2, 0)


def test_cron_spring_forward_gap_runs_once_at_gap_end() -> None:
    spec = CronSpec("30 2 * * *", BERLIN)  # 02:30 does not exist on 29 March 2026
    day = fires(spec, utc(2026, 3, 28, 22), utc(2026, 3, 29, 22))  # local 29 March
    assert day == [utc(2026, 3, 29, 1)]  # 03:00 CEST
    assert fires(spec, utc(2026, 3, 27), utc(2026, 3, 31)) == [
        utc(2026, 3, 27, 1, 30),
        utc(2026, 3, 28, 1, 30),
        utc(2026, 3, 29, 1),
        utc(2026, 3, 30, 0, 30),
    ]


def test_cron_fall_back_runs_once_at_first_occurrence() -> None:
    spec = CronSpec("30 2 * * *", BERLIN)  # 02:30 happens twice on 25 October 2026
    day = fires(spec, utc(2026, 10, 24, 22), utc(2026, 10, 25, 23))  # local 25 October
    assert day == [utc(2026, 10, 25, 0, 30)]  # 02:30 CEST
    # Starting inside the repeated hour, either pass, never gives a second run.
    for after in (utc(2026, 10, 25, 0, 40), utc(2026, 10, 25, 1, 10), utc(2026, 10, 25, 1, 30)):
        assert next_fire(spec, after) == utc(2026, 10, 26, 1, 30)


def test_cron_hourly_fall_back_day_has_24_runs() -> None:
    spec = CronSpec("0 * * * *", BERLIN)
    day = fires(spec, utc(2026, 10, 24, 22) - 1, utc(2026, 10, 25, 22) + 1)  # 25 local hours
    assert len(day) == 24
    assert_strictly_increasing(day)
    assert utc(2026, 10, 25, 1) not in day  # 02:00 CET, the repeated hour's second pass
    assert day[2:4] == [utc(2026, 10, 25, 0), utc(2026, 10, 25, 2)]


def test_cron_hourly_spring_forward_day_has_23_runs() -> None:
    spec = CronSpec("0 * * * *", BERLIN)
    day = fires(spec, utc(2026, 3, 28, 23) - 1, utc(2026, 3, 29, 21) + 1)  # 23 local hours
    assert len(day) == 23
    assert_strictly_increasing(day)


def test_cron_quarter_hourly_across_gap_has_no_duplicates() -> None:
    spec = CronSpec("*/15 * * * *", BERLIN)
    times = fires(spec, utc(2026, 3, 29, 0, 30), utc(2026, 3, 29, 1, 30))
    assert times == [
        utc(2026, 3, 29, 0, 45),
        utc(2026, 3, 29, 1),  # 02:00-03:00 local collapse onto the end of the gap
        utc(2026, 3, 29, 1, 15),
        utc(2026, 3, 29, 1, 30),
    ]


@pytest.mark.parametrize("tz", [BERLIN, "America/New_York", "Australia/Lord_Howe", "UTC"])
def test_cron_fires_strictly_increase_through_a_year(tz: str) -> None:
    times = fires(CronSpec("*/30 1-3 * * *", tz), utc(2026, 1, 1), utc(2027, 1, 1))
    assert_strictly_increasing(times)
    assert 365 * 4 <= len(times) <= 365 * 6


# --- plan_fires ----------------------------------------------------------------------


def test_plan_after_long_outage_skip_and_run_once() -> None:
    spec = CronSpec("0 * * * *")
    due, now = utc(2026, 1, 10, 2), utc(2026, 1, 10, 12, 30)  # 10 hours late, nothing on time
    assert plan_fires(spec, due, now, MisfirePolicy.SKIP) == FirePlan((), utc(2026, 1, 10, 13))
    once = plan_fires(spec, due, now, MisfirePolicy.RUN_ONCE)
    assert once == FirePlan((utc(2026, 1, 10, 12),), utc(2026, 1, 10, 13))


def test_plan_outage_with_an_on_time_fire() -> None:
    spec = CronSpec("0 * * * *")
    due, now = utc(2026, 1, 10, 2), utc(2026, 1, 10, 12, 0, 30)
    skip = plan_fires(spec, due, now, MisfirePolicy.SKIP)
    assert skip.run_now == (utc(2026, 1, 10, 12),)
    once = plan_fires(spec, due, now, "run_once")  # type: ignore[arg-type]
    assert once.run_now == (utc(2026, 1, 10, 12),)  # the outage collapses into one run
    assert once.next_due == utc(2026, 1, 10, 13)


@pytest.mark.parametrize("policy", list(MisfirePolicy))
def test_plan_on_time_fire_runs(policy: MisfirePolicy) -> None:
    spec = CronSpec("0 * * * *")
    plan = plan_fires(spec, utc(2026, 1, 10, 12), utc(2026, 1, 10, 12, 0, 10), policy)
    assert plan == FirePlan((utc(2026, 1, 10, 12),), utc(2026, 1, 10, 13))


def test_plan_not_yet_due_runs_nothing() -> None:
    plan = plan_fires(IntervalSpec(10), 100.0, 50.0, MisfirePolicy.RUN_ONCE)
    assert plan == FirePlan((), 100.0)


def test_plan_interval_keeps_phase() -> None:
    plan = plan_fires(IntervalSpec(10), 100.0, 125.0, MisfirePolicy.SKIP, grace=60)
    assert plan == FirePlan((100.0, 110.0, 120.0), 130.0)
    plan = plan_fires(IntervalSpec(10), 100.0, 125.0, MisfirePolicy.RUN_ONCE, grace=12)
    assert plan == FirePlan((120.0,), 130.0)  # 100 was missed: everything collapses


def test_plan_interval_after_a_year_offline_is_bounded() -> None:
    now = utc(2026, 1, 1) + 0.5
    skip = plan_fires(IntervalSpec(1), utc(2025, 1, 1), now, MisfirePolicy.SKIP)
    assert len(skip.run_now) == 60  # fires in [now - 60, now]
    assert skip.next_due == utc(2026, 1, 1) + 1
    once = plan_fires(IntervalSpec(1), utc(2025, 1, 1), now, MisfirePolicy.RUN_ONCE)
    assert once.run_now == (skip.run_now[-1],)
    tiny = plan_fires(IntervalSpec(0.001), utc(2025, 1, 1), now, MisfirePolicy.RUN_ONCE)
    assert len(tiny.run_now) == 1
    tiny = plan_fires(IntervalSpec(0.001), utc(2025, 1, 1), now, MisfirePolicy.SKIP)
    assert len(tiny.run_now) == 1000  # on-time fires are capped
    assert_strictly_increasing(list(tiny.run_now))
    assert now < tiny.next_due <= now + 0.001


@pytest.mark.parametrize(
    ("expr", "start"),
    [("*/15 * * * *", utc(2026, 3, 28, 20)), ("0 * * * *", utc(2026, 10, 24, 20))],
)
def test_plan_lists_the_same_fires_as_next_fire_across_dst(expr: str, start: float) -> None:
    spec = CronSpec(expr, BERLIN)
    due = next_fire(spec, start)
    now = start + 12 * 3600
    plan = plan_fires(spec, due, now, MisfirePolicy.SKIP, grace=1e6)
    assert list(plan.run_now) == [due, *fires(spec, due, now)]
    assert plan.next_due == next_fire(spec, now)


def test_plan_rejects_bad_grace_and_policy() -> None:
    with pytest.raises(InvalidScheduleError, match="invalid grace"):
        plan_fires(IntervalSpec(1), 0.0, 1.0, MisfirePolicy.SKIP, grace=-1)
    with pytest.raises(InvalidScheduleError, match="misfire policy"):
        plan_fires(IntervalSpec(1), 0.0, 1.0, "later")  # type: ignore[arg-type]
    with pytest.raises(InvalidScheduleError, match="invalid now"):
        plan_fires(IntervalSpec(1), 0.0, math.nan, MisfirePolicy.SKIP)


# --- storage ---------------------------------------------------------------------------


@pytest.mark.parametrize("spec", [IntervalSpec(2.5), CronSpec("0 9 * * 1-5", BERLIN)])
def test_spec_json_round_trip(spec: ScheduleSpec) -> None:
    assert spec_from_json(spec_to_json(spec)) == spec


@pytest.mark.parametrize(
    "data",
    [{}, {"kind": "weekly"}, {"kind": "interval"}, {"kind": "cron", "expr": "x"}],
)
def test_spec_from_json_rejects(data: dict[str, object]) -> None:
    with pytest.raises(InvalidScheduleError):
        spec_from_json(data)
