"""The queue core in one process, no Ray: order, a retry and a scheduled task on a fake clock.

Run with ``python -m rayqueue.examples.demo_core``. It shows the rules that the Ray runtime wraps.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from decimal import Decimal

from rayqueue import ErrorInfo, Failure, FakeClock, QueueCore, TaskState
from rayqueue.examples.notification import NotificationTask
from rayqueue.examples.payment import PaymentTask
from rayqueue.examples.report import ReportTask
from rayqueue.task import (
    TaskContext,
    decode_payload,
    encode_result,
    run_task,
    set_current,
    to_new_task,
)


def main() -> None:
    """Enqueue mixed tasks, drain them with one simulated worker, print what happened."""
    clock = FakeClock(dt.datetime(2026, 11, 30, 9, tzinfo=dt.timezone.utc).timestamp())
    core = QueueCore()
    monday = dt.date(2026, 11, 23)
    tasks = [
        to_new_task(ReportTask(week_start=monday, orders=500), task_id="report-w48"),
        to_new_task(NotificationTask(channel="email", to="ana@example.com", body="Shipped!")),
        to_new_task(PaymentTask(order_id="A-1", amount=Decimal("42.00"), currency="EUR",
                                transient_failures=1), task_id="pay-A-1"),
        to_new_task(NotificationTask(channel="sms", to="+4915112345678", body="Code 1234")),
        to_new_task(PaymentTask(order_id="A-2", amount=Decimal("9.50"), currency="EUR")),
        to_new_task(ReportTask(week_start=monday), task_id="report-later",
                    run_at=clock.now() + 30),
    ]
    core.enqueue_many(tasks, clock.now())
    print(f"enqueued {len(tasks)} tasks: {core.stats().by_state}")
    while core.size():
        core.tick(clock.now())
        leases = core.claim("demo-worker", 1, clock.now())
        if not leases:
            wake = core.next_wakeup()
            assert wake is not None
            clock.set(wake)
            continue
        lease = leases[0]
        task = decode_payload(lease.task_name, lease.payload)
        name = type(task).__name__
        try:
            set_current(TaskContext(lease.task_id, lease.attempt, "demo-worker"))
            result = asyncio.run(run_task(task))
        except Exception as exc:
            rec = core.fail(lease.task_id, lease.token,
                            Failure(ErrorInfo.from_exception(exc),
                                    retryable=lease.retry.is_retryable(exc)), clock.now())
            print(f"  t+{clock.now() % 3600:5.1f}s  {name:<17} attempt {lease.attempt} "
                  f"failed ({type(exc).__name__}); retry at t+{rec.due_at % 3600:.1f}s")
            continue
        core.ack(lease.task_id, lease.token, encode_result(type(task), result), clock.now())
        print(f"  t+{clock.now() % 3600:5.1f}s  {name:<17} priority {lease.priority:>3} "
              f"attempt {lease.attempt} ok")
        clock.advance(0.1)
    done = core.stats().by_state
    assert done[TaskState.SUCCEEDED.value] == len(tasks)
    print(f"all done: {done}")


if __name__ == "__main__":
    main()
