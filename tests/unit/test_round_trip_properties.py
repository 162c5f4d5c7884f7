"""Property tests of what must come back as it went in (issue 13, build 6): task
payloads through encode/decode, records through the storage codec and a real SQLite
journal, and cron schedules through daylight-saving changes."""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import math
import tempfile
from pathlib import Path
from typing import ClassVar
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from rayqueue import InvalidPayloadError, Task
from rayqueue.core.priority import PRIORITY_MAX, PRIORITY_MIN
from rayqueue.core.record import ErrorInfo, ScheduleRecord, TaskRecord, TaskState
from rayqueue.core.retry import RetryPolicy
from rayqueue.core.schedule import CronSpec, IntervalSpec, MisfirePolicy, next_fire
from rayqueue.storage.codec import row_of_task, schedule_of_row, task_of_row
from rayqueue.storage.sqlite import SQLiteStorage
from rayqueue.task import decode_payload, encode_payload

# ------------------------------------------------------------------ payloads


class Inner(BaseModel):
    label: str
    weights: list[float]


class Everything(Task[None]):
    """A task with a field of each kind a payload commonly holds."""

    task_name: ClassVar[str] = "props.everything"

    text: str
    number: int
    ratio: float
    flag: bool
    maybe: int | None = None
    tags: dict[str, str] = {}
    items: list[int] = []
    inner: Inner | None = None
    when: dt.datetime | None = None
    raw: bytes = b""

    def execute(self) -> None:
        return None


def _instant(task: Everything) -> Everything:
    when = task.when
    if when is not None and when.tzinfo is not None:
        when = when.astimezone(dt.timezone.utc)
    return task.model_copy(update={"when": when})


#: any valid text: every code point but lone surrogates (no journal can carry those)
TEXT = st.text(st.characters(blacklist_categories=("Cs",)))
FLOATS = st.floats(allow_nan=False, allow_infinity=False)


@given(st.builds(
    Everything, text=TEXT, number=st.integers(), ratio=FLOATS, flag=st.booleans(),
    maybe=st.none() | st.integers(), tags=st.dictionaries(TEXT, TEXT, max_size=4),
    items=st.lists(st.integers(), max_size=5),
    inner=st.none() | st.builds(Inner, label=TEXT, weights=st.lists(FLOATS, max_size=3)),
    # From 1980: pydantic writes UTC offsets to the minute, and local mean times of
    # old (Africa/Abidjan in 1912: -00:16:08) would come back 8 s off (not refused).
    when=st.none() | st.datetimes(min_value=dt.datetime(1980, 1, 1),
                                  timezones=st.none() | st.timezones()),
    raw=st.binary(max_size=20)))
# A local time in a DST gap (Juneau skipped 02:00-03:00 that night): it comes back as
# the same instant at a fixed offset, which Python (PEP 495) never calls equal to it.
@example(Everything(text="", number=0, ratio=0.0, flag=False, when=dt.datetime(
    2016, 3, 13, 2, 0, tzinfo=ZoneInfo("America/Juneau"))))
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_a_payload_comes_back_equal_or_is_refused(task: Everything) -> None:
    try:
        task.raw.decode()
    except UnicodeDecodeError:  # JSON carries bytes as UTF-8 text: refused, not mangled
        with pytest.raises(InvalidPayloadError, match="field 'raw'"):
            encode_payload(task)
        return
    payload = encode_payload(task)
    # Equal, with its time as the instant it names: JSON holds a UTC offset, not a zone.
    assert _instant(decode_payload(Everything.task_name, payload)) == _instant(task)
    assert encode_payload(decode_payload(Everything.task_name, payload)) == payload


@given(st.sampled_from([math.nan, math.inf, -math.inf]))
def test_a_payload_that_json_cannot_hold_is_refused(bad: float) -> None:
    try:
        encode_payload(Everything(text="x", number=1, ratio=bad, flag=True))
    except InvalidPayloadError as err:
        assert "ratio" in str(err)
    else:
        raise AssertionError(f"{bad} was encoded")


# ------------------------------------------------------------- storage codec

#: what check_text lets through for ids and names: printable, no lone surrogates
NAMES = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Cf", "Zl", "Zp", "Co", "Cn")),
                min_size=1, max_size=40).filter(str.isprintable)
TIMES = st.floats(0.0, 4e9, allow_nan=False)
OPT_TIMES = st.none() | TIMES
COUNTS = st.integers(0, 2**62)
POLICIES = st.builds(RetryPolicy, max_attempts=st.integers(1, 100),
                     backoff=st.sampled_from(["exponential", "fixed"]),
                     base_delay=st.floats(0.0, 1e4), factor=st.floats(1.0, 10.0),
                     max_delay=st.floats(1e4, 1e6), jitter=st.booleans(),
                     max_lost_attempts=st.integers(1, 100))
ERRORS = st.none() | st.builds(ErrorInfo, TEXT, TEXT, st.none() | TEXT)
RECORDS = st.builds(
    TaskRecord, id=NAMES, task_name=NAMES, payload=TEXT,
    priority=st.integers(PRIORITY_MIN, PRIORITY_MAX), pool=NAMES,
    state=st.sampled_from(list(TaskState)), seq=COUNTS, created_at=TIMES, due_at=TIMES,
    updated_at=TIMES, retry=POLICIES, timeout=st.none() | st.floats(0.001, 1e6),
    attempts=COUNTS, lost_attempts=COUNTS, lease_token=COUNTS, worker=st.none() | NAMES,
    lease_expires_at=OPT_TIMES, deadline=OPT_TIMES, started_at=OPT_TIMES,
    finished_at=OPT_TIMES, error=ERRORS, result=st.none() | TEXT,
    reason=st.none() | NAMES, schedule_id=st.none() | NAMES)
SPECS = st.one_of(
    st.builds(IntervalSpec, st.floats(0.001, 1e9)),
    st.builds(CronSpec, st.sampled_from(["* * * * *", "*/7 3-5 * * 1-5", "0 0 29 2 *"]),
              st.sampled_from(["UTC", "Europe/Berlin", "Australia/Lord_Howe"])))
SCHEDULES = st.builds(
    ScheduleRecord, id=NAMES, task_name=NAMES, payload=TEXT,
    priority=st.integers(PRIORITY_MIN, PRIORITY_MAX), pool=NAMES, spec=SPECS,
    misfire=st.sampled_from(list(MisfirePolicy)), next_due=TIMES, created_at=TIMES,
    retry=POLICIES, timeout=st.none() | st.floats(0.001, 1e6), runs=COUNTS)


@given(RECORDS)
@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
def test_a_task_record_survives_the_codec(rec: TaskRecord) -> None:
    task_id, task_name, _state, payload, record = row_of_task(rec)
    assert task_of_row((task_id, task_name, payload, record)) == rec


@given(SCHEDULES)
@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
def test_a_schedule_record_survives_the_codec(sched: ScheduleRecord) -> None:
    assert schedule_of_row((sched.id, _schedule_json(sched))) == sched


def _schedule_json(sched: ScheduleRecord) -> str:
    from rayqueue.core.record import dumps

    return dumps(sched.to_json())


@given(st.lists(RECORDS, max_size=6, unique_by=lambda r: r.id),
       st.lists(SCHEDULES, max_size=3, unique_by=lambda s: s.id))
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_records_come_back_from_a_real_sqlite_journal(
        tasks: list[TaskRecord], schedules: list[ScheduleRecord]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "q.sqlite"
        storage = SQLiteStorage(path, durability="process")
        storage.write(tasks=tasks, schedules=schedules)
        storage.close()
        again = SQLiteStorage(path, durability="process", create=False)
        try:
            state = again.load()
        finally:
            again.close()
    assert sorted(state.tasks, key=lambda r: r.id) == sorted(tasks, key=lambda r: r.id)
    assert sorted(state.schedules, key=lambda s: s.id) == sorted(schedules, key=lambda s: s.id)


# ------------------------------------------------------------------ cron/DST

ZONES = ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "America/Santiago",
         "Asia/Tehran", "UTC"]
EXPRS = ["* * * * *", "*/15 * * * *", "0 * * * *", "30 2 * * *", "0 1-3 * * *",
         "45 23 * * 6"]
#: 2020 to 2035: every zone above but UTC changes its clocks in this span
SPAN = (1_577_836_800.0, 2_051_222_400.0)


@functools.cache
def _transitions(tz: str) -> tuple[float, ...]:
    """Days (their start, UTC) on which ``tz`` changes its UTC offset, 2020 to 2035."""
    zone = _zone(tz)
    days = range(int(SPAN[0]), int(SPAN[1]), 86_400)
    return tuple(float(d) for d in days
                 if _offset(d, zone) != _offset(d + 86_400, zone)) or (SPAN[0],)


@st.composite
def zone_and_start(draw: st.DrawFn) -> tuple[str, float]:
    """A zone and a start shortly before one of its clock changes (or anywhere)."""
    tz = draw(st.sampled_from(ZONES))
    if draw(st.booleans()):
        return tz, draw(st.floats(*SPAN))
    day = draw(st.sampled_from(_transitions(tz)))
    return tz, day + draw(st.floats(-2 * 86_400.0, 86_400.0))


@given(st.sampled_from(EXPRS), zone_and_start())
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_cron_fires_are_strictly_later_and_match_their_wall_time(
        expr: str, zone_start: tuple[str, float]) -> None:
    tz, start = zone_start
    spec = CronSpec(expr, tz)
    zone = dt.timezone.utc if tz == "UTC" else _zone(tz)
    fires = [next_fire(spec, start)]
    for _ in range(5):
        fires.append(next_fire(spec, fires[-1]))
    assert fires[0] > start
    assert all(a < b for a, b in itertools.pairwise(fires)), "not strictly later"
    for fire in fires:
        wall = dt.datetime.fromtimestamp(fire, zone).replace(tzinfo=None)
        shifted = _offset(fire - 1, zone) != _offset(fire, zone)
        # On the minute in its zone, and matching the expression, unless it is the end
        # of a DST gap that swallowed the wall time it was due at.
        assert fire == math.floor(fire)
        assert croniter.match(expr, wall) or shifted, f"{wall} does not match {expr}"


@given(st.sampled_from(["*/15 * * * *", "0 * * * *"]), zone_and_start())
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_cron_skips_no_fire_and_runs_a_repeated_hour_once(
        expr: str, zone_start: tuple[str, float]) -> None:
    """Between two fires, no instant on the minute matches the expression, except the
    second pass through a wall time that DST repeated (it ran on the first)."""
    tz, start = zone_start
    spec = CronSpec(expr, tz)
    zone = dt.timezone.utc if tz == "UTC" else _zone(tz)
    a = next_fire(spec, start)
    for _ in range(6):
        b = next_fire(spec, a)
        minute = math.floor(a / 60) * 60 + 60
        while minute < b:
            wall = dt.datetime.fromtimestamp(minute, zone).replace(tzinfo=None)
            first_pass = _first_instant(wall, zone) == minute
            assert not (croniter.match(expr, wall) and first_pass), (
                f"{wall} ({tz}) matches {expr} between fires {a} and {b}")
            minute += 60
        a = b


def _zone(name: str) -> dt.tzinfo:
    from zoneinfo import ZoneInfo

    return ZoneInfo(name)


def _offset(instant: float, zone: dt.tzinfo) -> dt.timedelta | None:
    return dt.datetime.fromtimestamp(instant, zone).utcoffset()


def _first_instant(wall: dt.datetime, zone: dt.tzinfo) -> float:
    return wall.replace(tzinfo=zone, fold=0).timestamp()
