"""Schedules you can see and that stop failing: a run whose task type no worker knows
pauses its schedule (journaled, with the reason) instead of failing a run each period
(issue 16, item 2)."""

from __future__ import annotations

from pathlib import Path

from rayqueue import FakeClock, QueueCore
from rayqueue.core.lease import Failure, Outcome
from rayqueue.core.record import ErrorInfo
from rayqueue.core.schedule import CronSpec, IntervalSpec
from rayqueue.info import ScheduleInfo
from rayqueue.storage.sqlite import SQLiteStorage

UNKNOWN = Failure(ErrorInfo("UnknownTaskError", "no class for task 'myapp.heartbeat'"),
                  retryable=True, retry_delay=1.0, reason="unknown_task")


def test_a_schedule_of_an_unknown_task_type_is_paused_not_failed_in_a_loop(
        tmp_path: Path) -> None:
    clock = FakeClock(1_000.0)
    core = QueueCore(storage=SQLiteStorage(tmp_path / "j.sqlite"))
    core.add_schedule(schedule_id="every-minute", task_name="myapp.heartbeat", payload="{}",
                      spec=IntervalSpec(60), now=clock.now(), priority=50)
    clock.advance(61)
    core.tick(clock.now())
    [lease] = core.claim("w", 1, clock.now())
    assert lease.task_id.startswith("every-minute@")
    core.complete_many([Outcome(lease.task_id, lease.token, failure=UNKNOWN)], clock.now())
    [sched] = core.schedules()
    assert sched.paused_reason is not None and "myapp.heartbeat" in sched.paused_reason
    # No more runs: a day of ticks creates nothing new.
    before = core.stats().size
    for _ in range(24):
        clock.advance(3_600)
        core.tick(clock.now())
    assert core.stats().size == before
    # The pause is in the journal: a restart keeps it.
    core.storage.close()
    again = QueueCore.recover(SQLiteStorage(tmp_path / "j.sqlite"))
    [kept] = again.schedules()
    assert kept.paused_reason == sched.paused_reason
    info = ScheduleInfo.of(kept)
    assert info.paused and info.next_run is None and info.trigger == "every 60s"
    assert info.runs == 1 and info.last_run == 1_060.0
    # Resumed once the code is deployed: it fires again from its next time.
    resumed = again.resume_schedule("every-minute", clock.now())
    assert resumed.paused_reason is None and resumed.next_due > clock.now()
    clock.advance(61)
    again.tick(clock.now())
    assert again.stats().size == before + 1


def test_schedule_info_describes_cron_triggers() -> None:
    clock = FakeClock(1_000.0)
    core = QueueCore()
    rec = core.add_schedule(schedule_id="weekly", task_name="shop.report", payload="{}",
                            spec=CronSpec("0 9 * * MON", "Europe/Berlin"), now=clock.now(),
                            priority=10)
    info = ScheduleInfo.of(rec)
    assert info.trigger == "cron 0 9 * * MON (Europe/Berlin)"
    assert info.next_run == rec.next_due and not info.paused and info.last_run is None


def test_the_pool_manager_is_told_when_each_pool_next_runs_a_schedule() -> None:
    from rayqueue.core.shards import PoolStatus, merge_pool_status

    clock = FakeClock(1_000.0)
    core = QueueCore()
    core.add_schedule(schedule_id="a", task_name="t", payload="{}", spec=IntervalSpec(60),
                      now=clock.now(), priority=50, pool="reports")
    core.add_schedule(schedule_id="b", task_name="t", payload="{}", spec=IntervalSpec(20),
                      now=clock.now(), priority=50, pool="reports")
    assert core.schedules_due_in(clock.now()) == {"reports": 20.0}
    merged = merge_pool_status([PoolStatus(schedule_in={"reports": 20.0}),
                                PoolStatus(schedule_in={"reports": 5.0, "x": 9.0})])
    assert merged.schedule_in == {"reports": 5.0, "x": 9.0}
