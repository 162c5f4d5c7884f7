"""The e-commerce demo on a local Ray: thousands of mixed tasks, priorities, retries, scaling.

Run with ``make demo`` (or ``python -m rayqueue.examples.demo``). It starts a private local Ray,
opens the queue ``shop`` on its SQLite journal (``.rayqueue/shop.sqlite``), enqueues a
burst of notifications, payments and reports, and prints what happened: throughput,
the order priorities were served in, retries and dead letters, the worker count over
time, and the final metrics. Interrupt it (Ctrl-C) and run it again: the second run
finds the unfinished tasks in the journal and finishes them.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import sys
import tempfile
import threading
import time
from collections import defaultdict
from decimal import Decimal
from typing import Any, ClassVar, TextIO

import ray

import rayqueue
from rayqueue import PoolConfig, Priority, QueueConfig, RetryPolicy, Task, settings
from rayqueue.examples.inventory import reserve_stock
from rayqueue.examples.notification import NotificationTask
from rayqueue.examples.payment import GatewayCharge, PaymentTask
from rayqueue.examples.report import ReportTask
from rayqueue.examples.workflows import ReceiptNotification, RegionalReport, SalesSummary

N_NOTIFICATIONS = 2_000
N_PAYMENTS = 600
N_REPORTS = 400


class CorruptOrderTask(Task[None]):
    """A poison message: it crashes whichever worker process runs it."""

    task_name: ClassVar[str] = "shop.corrupt_order"
    priority: ClassVar[int] = Priority.NORMAL
    retry: ClassVar[RetryPolicy] = RetryPolicy(max_attempts=5, max_lost_attempts=3)

    order_id: str

    def execute(self) -> None:
        os._exit(1)  # as a segfaulting C extension would


class _RayDeathNotes:
    """Holds back Ray's paragraph about a dead worker process, and counts them.

    Ray's driver prints "A worker died or was killed while executing a task..." for each
    worker process that dies, whatever ``log_to_driver`` says, in the middle of the
    progress bar. The demo kills three on purpose (the poison task), and says so in its
    own words; this stdout wrapper takes those paragraphs (only those) out of the way,
    and the demo reports how many Ray printed, with their PIDs, at the end.
    """

    MARK = "A worker died or was killed"

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.deaths = 0
        self.pids: list[str] = []
        self._held_by: int | None = None  # the thread whose print's newline to drop

    def write(self, text: str) -> int:
        if self.MARK in text:
            repeated = re.search(r"repeated (\d+)x", text)
            self.deaths += int(repeated[1]) if repeated else 1
            self.pids += re.findall(r"Worker PID: (\d+)", text)
            self._held_by = threading.get_ident()
            return len(text)
        if text == "\n" and self._held_by == threading.get_ident():
            self._held_by = None
            return len(text)
        return self._stream.write(text)

    def __getattr__(self, name: str) -> Any:  # flush, isatty, encoding...
        return getattr(self._stream, name)


def _bar(done: int, total: int, started: float, width: int = 40) -> None:
    filled = int(width * done / max(total, 1))
    rate = done / max(time.monotonic() - started, 1e-9)
    line = f"  [{'#' * filled}{'.' * (width - filled)}] {done:>5}/{total} {rate:>6.0f} tasks/s"
    # On a terminal the bar redraws in place; in a log it prints one line per update.
    sys.stdout.write(f"\r{line}" if sys.stdout.isatty() else f"{line}\n")
    sys.stdout.flush()


def _workload() -> list[Task[Any]]:
    monday = dt.date(2026, 11, 23)
    work: list[Task[Any]] = [ReportTask(week_start=monday, orders=300) for _ in range(N_REPORTS)]
    work += [
        NotificationTask(channel="email" if i % 2 else "sms",
                         to=f"customer{i}@example.com" if i % 2 else f"+49151{i:07d}",
                         body=f"Your order {i} has shipped")
        for i in range(N_NOTIFICATIONS)
    ]
    work += [
        PaymentTask(order_id=f"order-{i}", amount=Decimal("19.99") + i, currency="EUR",
                    transient_failures=1 if i % 10 == 0 else 0, decline=i == 7)
        for i in range(N_PAYMENTS)
    ]
    return work


def main() -> None:
    """Run the demo end to end; on Ctrl-C, leave the rest in the journal for next time."""
    # Under `ray job submit` (RAY_ADDRESS is set) the demo runs on that cluster and leaves
    # the queue up for other drivers; on its own it starts a private local Ray.
    attached = settings.ray_address() is not None
    if not attached:
        settings.private_cluster_auth()  # a private throwaway cluster: our choice
    where = "the job's Ray cluster" if attached else "a local Ray"
    print(f"rayqueue demo: an e-commerce burst on {where}\n")
    notes = _RayDeathNotes(sys.stdout)
    sys.stdout = notes
    try:
        _run(attached)
    finally:
        sys.stdout = notes._stream
    if notes.deaths:
        print(f"(Ray reported {notes.deaths} worker process death(s) while the demo ran, "
              f"PIDs {', '.join(notes.pids) or '?'}; the poison task above kills 3 on "
              "purpose. Ray's account of each is in its session logs.)")


def _run(attached: bool) -> None:
    t0 = time.monotonic()
    if attached:
        ray.init(log_to_driver=False)
    else:
        ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False,
                 _temp_dir=tempfile.mkdtemp(prefix="rqdemo-", dir="/tmp"))
    try:
        pool = PoolConfig(min_workers=0, max_workers=4, concurrency=8,
                          target_tasks_per_worker=64, downscale_delay_s=2.0)
        queue = rayqueue.init("shop", pools=[pool], config=QueueConfig(lease_ttl=10))
        print(f"Ray and queue 'shop' up in {time.monotonic() - t0:.1f}s; pool: "
              f"{pool.min_workers}..{pool.max_workers} workers x {pool.concurrency} slots")
        print(f"journal: {queue.journal}")
        left = queue.size()
        if left:
            _resume(queue, left)
        else:
            _burst(queue)
        if attached:
            print("\nqueue 'shop' stays up on the cluster: `rayqueue -q shop status`, or "
                  "rayqueue.connect('shop') from another driver or job")
        else:
            queue.shutdown()
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut shutdown
        print("\n\ninterrupted: the unfinished tasks stay in the journal; run `make demo` "
              "again to finish them")
    finally:
        ray.shutdown()
    print(f"\ndone in {time.monotonic() - t0:.1f}s")


def _wait_with_progress(queue: rayqueue.TaskQueue[Any], total: int) -> float:
    """Show progress until the queue is empty; returns the seconds it took."""
    t1 = time.monotonic()
    while True:
        size = queue.size()
        _bar(total - min(size, total), total, t1)
        if size == 0 or time.monotonic() - t1 > 120:
            break
        time.sleep(0.5)  # progress display only
    return time.monotonic() - t1


def _resume(queue: rayqueue.TaskQueue[Any], left: int) -> None:
    """Finish what an interrupted run left in the journal."""
    print(f"\nthe journal holds {left} unfinished task(s) from an interrupted run: "
          "finishing them\n")
    elapsed = _wait_with_progress(queue, left)
    print(f"\n\nfinished {left} recovered task(s) in {elapsed:.1f}s")
    print(f"queue now: {queue.stats().by_state}")
    for info in queue.dead_letters(5):
        print(f"dead letter: {info.task_name} {info.id[:12]} reason={info.reason}")


def _limits(queue: rayqueue.TaskQueue[Any]) -> None:
    """Rate and concurrency limits: 60 gateway charges of 4 customers (one with most of
    them) at 20 starts a second and one charge per customer at a time."""
    sizes = {1: 45, 2: 5, 3: 5, 4: 5}
    charges = [GatewayCharge(customer_id=c, order_id=f"c{c}-{i}", amount=Decimal("9.99"))
               for c, n in sizes.items() for i in range(n)]
    handles = queue.enqueue_many(charges)
    infos = [i for i in queue.wait([h.id for h in handles], 60) if i and i.started_at]
    starts = sorted(i.started_at or 0.0 for i in infos)
    rate = (len(starts) - 1) / max(starts[-1] - starts[0], 1e-9)
    by_customer: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for info in infos:
        customer = GatewayCharge.model_validate_json(info.payload_json or "{}").customer_id
        by_customer[customer].append((info.started_at or 0.0, info.finished_at or 0.0))
    # The most charges of one customer running at one time, and the rank of each
    # customer's first start (fair turns: a small customer is not queued behind the big).
    overlap = max(max(sum(s <= t < e for s, e in spans) for t, _ in spans)
                  for spans in by_customer.values())
    firsts = sorted(starts.index(min(spans)[0]) for spans in by_customer.values())
    print(f"\nlimits: {len(infos)} shop.gateway_charge of 4 customers (45, 5, 5, 5) at "
          f"{GatewayCharge.rate_limit} and 1 per customer: started at {rate:.1f}/s, at most "
          f"{overlap} of a customer at once, each customer's first charge among the first "
          f"{firsts[-1] + 1} starts")


def _burst(queue: rayqueue.TaskQueue[Any]) -> None:
    """Enqueue the e-commerce burst, run it, and print what happened."""
    weekly = queue.schedule(ReportTask(week_start=dt.date(2026, 11, 23)),
                            cron="0 9 * * MON", tz="Europe/Berlin", schedule_id="weekly-report")
    queue.schedule(NotificationTask(channel="email", to="ops@example.com", body="heartbeat"),
                   every=5, schedule_id="ops-heartbeat")
    print(f"scheduled: '{weekly}' (cron 0 9 * * MON, Europe/Berlin) and 'ops-heartbeat' "
          "(every 5 s)")

    work = _workload()
    t1 = time.monotonic()
    handles = queue.enqueue_many(work)
    poison = queue.enqueue(CorruptOrderTask(order_id="order-666"))
    print(f"enqueued {len(handles) + 1} tasks in one call in "
          f"{(time.monotonic() - t1) * 1e3:.0f} ms")
    print("one of them is poison on purpose: shop.corrupt_order kills the worker process "
          "that runs it\n(os._exit, as a segfaulting C extension would). rayqueue sees the "
          "worker die, counts a\nlost attempt, respawns the worker and retries the task "
          "elsewhere; after 3 lost attempts it is\na dead letter (reason worker_lost). The "
          "tasks that shared the dead worker are retried too.\n")

    total = len(handles) + 1
    elapsed = _wait_with_progress(queue, total)
    print(f"\n\nran {total} tasks in {elapsed:.1f}s: {total / elapsed:,.0f} tasks/s "
          "end to end (2-core machine)\n")

    infos = [i for i in queue.get_many([h.id for h in handles]) if i and i.started_at]
    infos.sort(key=lambda i: i.started_at or 0.0)
    by_type: dict[str, list[int]] = defaultdict(list)
    for rank, info in enumerate(infos, 1):
        by_type[info.task_name].append(rank)
    print("order served (start rank among all tasks; higher priority first):")
    for name, prio in (("shop.payment", PaymentTask.priority),
                       ("shop.notification", NotificationTask.priority),
                       ("shop.report", ReportTask.priority)):
        ranks = sorted(by_type[name])
        print(f"  {name:<18} priority {prio:>3}: started #{ranks[0]:>5} .. #{ranks[-1]:>5}, "
              f"median #{ranks[len(ranks) // 2]}")

    again: dict[str, int] = defaultdict(int)
    for info in infos:
        if info.attempts > 1 and info.state == "succeeded":
            again[info.task_name] += 1
    print("\nsucceeded after more than one attempt (transient failures, or a worker lost "
          f"under them): {dict(again)}")
    for info in queue.dead_letters():
        print(f"dead letter: {info.task_name} {info.id[:12]} reason={info.reason} "
              f"after {info.attempts} attempt(s): {info.error_type}")
    assert queue.get(poison.id).reason == "worker_lost"

    # A task type can also be a plain typed function (rayqueue.function_task).
    held = reserve_stock.enqueue(queue, "SKU-42", quantity=3).result(timeout=60)
    print(f"\nfunction task shop.reserve_stock(\"SKU-42\", quantity=3) -> "
          f"{held.reservation_id} ({held.quantity} held)")

    # Workflows: a chain (the charge's receipt reaches the notification as validated
    # data) and a chord (a summary once every regional report is done).
    charge = rayqueue.chain(PaymentTask(order_id="wf-1", amount=Decimal("59.90"),
                                        currency="EUR"))
    sent = queue.enqueue(charge.then(ReceiptNotification, receipt=charge.output,
                                     to="ada@example.com")).result(timeout=60)
    print(f"chain shop.payment -> shop.receipt_notification: {sent.message_id} to {sent.to}")
    regions = rayqueue.group(RegionalReport(region=r, orders=n) for r, n in
                             (("north", 1200), ("south", 800), ("east", 450), ("west", 300)))
    summary = queue.enqueue(regions.then(SalesSummary, regions=regions.outputs))
    print(f"chord 4 x shop.regional_report -> shop.sales_summary: "
          f"{summary.result(timeout=60)}")

    _limits(queue)

    print("\nwaiting for the idle pool to drain...")
    end = time.monotonic() + 20
    snap = queue.metrics()
    while snap.worker_history[-1][2] and time.monotonic() < end:
        time.sleep(0.25)  # display only: the pool drains on its own
        snap = queue.metrics()
    print("worker count over time (pool 'default'):")
    for when, name, n in snap.worker_history:
        print(f"  t+{when - snap.worker_history[0][0]:5.1f}s  {name:<8} {'#' * n} {n}")

    print("\nfinal metrics snapshot:")
    for name, outcomes in sorted(snap.counts.items()):
        print(f"  {name:<22} {outcomes}")
    mean_wait = snap.wait_sum / max(sum(snap.wait_counts), 1)
    mean_run = snap.run_sum / max(sum(snap.run_counts), 1)
    print(f"  mean wait {mean_wait * 1e3:.1f} ms, mean run {mean_run * 1e3:.2f} ms, "
          f"success ratio {snap.success_ratio or 0:.3f}")
    print(f"  depth: {snap.depth}")


if __name__ == "__main__":
    main()
