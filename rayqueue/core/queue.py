"""QueueCore: every rule of the queue (order, time, leases, retries) as plain Python.

The core never reads a clock and does no I/O of its own: each method takes ``now``
(epoch seconds) and journals its changes through a :class:`~rayqueue.storage.Storage`
*before* it changes memory, so an error (storage or validation) leaves it unchanged.
The Ray actors are thin shells around one instance.
"""

from __future__ import annotations

import heapq
import random
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

from rayqueue.core.browse import MAX_SCAN, Order, Page, TaskFilter
from rayqueue.core.checks import MAX_TASK_ID, check_new_task, check_text, utf8
from rayqueue.core.index import ReadyIndex, TimerIndex
from rayqueue.core.lease import Failure, Lease, Outcome
from rayqueue.core.port import InMemoryStorage, Storage
from rayqueue.core.priority import validate_priority
from rayqueue.core.record import (
    WAITING,
    Attempt,
    ErrorInfo,
    Limit,
    NewTask,
    ScheduleRecord,
    TaskRecord,
    TaskState,
    with_attempt,
)
from rayqueue.core.retry import MAX_RETRY_DELAY_S, RetryPolicy, finite
from rayqueue.core.schedule import MisfirePolicy, ScheduleSpec, next_fire, plan_fires
from rayqueue.core.stats import QueueStats
from rayqueue.errors import (
    DuplicateTaskError,
    InvalidArgumentError,
    InvalidScheduleError,
    InvalidStateError,
    InvalidTaskError,
    InvalidWorkflowError,
    PayloadTooLargeError,
    PurgeRefusedError,
    QueueClosedError,
    QueueFullError,
    StaleLeaseError,
    StorageError,
    TaskNotFoundError,
)

#: A suspect (its worker died under it) runs alone on an idle worker. Once it has been
#: ready this long with every worker busy, the next busy worker that claims is given
#: nothing more until it is idle, and then the suspect: its wait is bounded by this plus
#: the tasks that worker still holds, not by the backlog (nor by ``lease_ttl``).
SUSPECT_WAIT_S = 1.0


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """Tunable rules of one queue.

    Attributes:
        max_size: most unfinished tasks held at once (``None`` = unbounded).
        lease_ttl: seconds a claim stays valid without a heartbeat.
        aging_rate: priority levels a ready task gains per second of waiting (0 = strict).
        result_ttl: seconds a finished (succeeded or cancelled) task is kept.
        max_payload_bytes: largest accepted payload, as JSON.
        max_result_bytes: largest result kept, as JSON; an attempt whose result is
            larger fails for good (``result_too_large``).
        misfire_grace: a periodic run later than this counts as missed (see MisfirePolicy).
    """

    max_size: int | None = None
    lease_ttl: float = 30.0
    aging_rate: float = 0.0
    result_ttl: float = 3_600.0
    max_payload_bytes: int = 1 << 20
    max_result_bytes: int = 1 << 20
    misfire_grace: float = 60.0

    def __post_init__(self) -> None:
        size = self.max_size
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
            raise InvalidArgumentError("max_size", f"None or an int >= 1, got {size!r}")
        for name in ("max_payload_bytes", "max_result_bytes"):
            limit = getattr(self, name)
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
                raise InvalidArgumentError(name, f"an int >= 1, got {limit!r}")
        for name in ("lease_ttl", "result_ttl", "misfire_grace", "aging_rate"):
            value = getattr(self, name)
            if finite(value) is None or value < 0:
                raise InvalidArgumentError(name, f"a finite number >= 0, got {value!r}")
        if self.lease_ttl <= 0:
            raise InvalidArgumentError("lease_ttl", f"a number > 0, got {self.lease_ttl!r}")


@dataclass(frozen=True, slots=True)
class TickReport:
    """What one ``tick`` did. ``timed_out`` pairs (task id, worker) whose worker overran."""

    promoted: int = 0
    expired: tuple[str, ...] = ()
    timed_out: tuple[tuple[str, str], ...] = ()
    fired: int = 0
    purged: int = 0
    dead: tuple[str, ...] = ()


#: A rate bucket holds this many seconds' worth of tokens (at least one): enough to
#: absorb a late timer without losing rate, too little to be a noticeable burst.
RATE_BURST_S = 0.1
#: Where a key's next task goes in line after a turn: ``seq`` values above every task's.
_TURN_BASE = 1 << 62


@dataclass(slots=True)
class _Group:
    """The ready tasks of one (pool, task name, key) that has a limit.

    At most one of them, ``head``, stands in the pool's ready index; the others wait in
    ``waiting``. So a key whose limit is reached costs a claim nothing (its tasks are not
    in the index to be skipped), and one big key puts only one task in line at a time.
    """

    waiting: ReadyIndex
    head: str | None = None
    #: leased tasks of this group
    running: int = 0
    #: waits for a rate token (its bucket's timer puts it back in line)
    parked: bool = False


@dataclass(slots=True)
class _Bucket:
    """A token bucket: the rate limit of one (pool, task name), on the queue's clock."""

    rate: float
    tokens: float
    stamp: float
    #: groups waiting for a token
    parked: list[_Group] = field(default_factory=list)

    def available(self, now: float) -> float:
        burst = max(1.0, self.rate * RATE_BURST_S)
        return min(burst, self.tokens + max(0.0, now - self.stamp) * self.rate)

    def take(self, n: int, now: float) -> None:
        self.tokens = self.available(now) - n
        self.stamp = max(self.stamp, now)


@dataclass(slots=True)
class _Batch:
    tasks: list[TaskRecord] = field(default_factory=list)
    schedules: list[ScheduleRecord] = field(default_factory=list)
    delete_tasks: list[str] = field(default_factory=list)


_READY, _SCHEDULED, _PENDING = TaskState.READY, TaskState.SCHEDULED, TaskState.PENDING


class QueueCore:
    """The queue's state and rules. Not thread-safe: one owner calls it at a time."""

    def __init__(
        self,
        config: QueueConfig | None = None,
        storage: Storage | None = None,
        *,
        rng: random.Random | None = None,
        new_id: Callable[[], str] | None = None,
    ) -> None:
        self.config = config or QueueConfig()
        self.storage: Storage = storage if storage is not None else InMemoryStorage()
        self._rng = rng or random.Random()
        self._new_id = new_id or (lambda: uuid.uuid4().hex)
        self._tasks: dict[str, TaskRecord] = {}
        #: task ids in enqueue order, for listing pages (``browse``)
        self._order = Order()
        self._schedules: dict[str, ScheduleRecord] = {}
        self._ready: dict[str, ReadyIndex] = {}
        self._timers = TimerIndex()  # scheduled and retry-waiting tasks, by due_at
        self._leases = TimerIndex()  # leased tasks, by lease expiry
        self._deadlines = TimerIndex()  # leased tasks with a timeout, by deadline
        self._purges = TimerIndex()  # finished tasks, by end of result TTL
        self._schedule_timers = TimerIndex()
        self._by_worker: dict[str, set[str]] = {}
        self._state_counts: Counter[TaskState] = Counter()
        self._ready_counts: Counter[tuple[str, int]] = Counter()
        #: leases handed out ahead of lower-priority ready work whose start the worker
        #: has not confirmed: task id -> (pool, priority, lease token)
        self._unconfirmed: dict[str, tuple[str, int, int]] = {}
        #: per pool, a max-heap of (-priority, task id, lease token) over _unconfirmed;
        #: an entry no longer there is dropped when it reaches the top
        self._unconfirmed_heaps: dict[str, list[tuple[int, str, int]]] = {}
        #: per pool, the worker being emptied for a waiting suspect: (worker, task id)
        self._emptying: dict[str, tuple[str, str]] = {}
        #: pools where a claim got nothing because of an unconfirmed start
        self._held_back: set[str] = set()
        self._leased_counts: Counter[str] = Counter()
        #: limited tasks: their groups, rate buckets and the buckets' refill timers
        self._groups: dict[tuple[str, str, str | None], _Group] = {}
        self._buckets: dict[str, _Bucket] = {}
        self._bucket_timers = TimerIndex()
        self._turns = _TURN_BASE
        #: the latest ``now`` seen (where a key's next turn stands in line)
        self._now = 0.0
        #: last progress of running attempts, in memory only: task id -> (lease token,
        #: fraction, message); an entry of an older lease is ignored
        self._progress: dict[str, tuple[int, float, str | None]] = {}
        #: workflow steps waiting for their parents: parent id -> ids of its pending
        #: children (rebuilt from the pending records at recovery)
        self._children: dict[str, list[str]] = {}
        #: pools where a step became ready since :meth:`take_unblocked`
        self._unblocked: set[str] = set()
        #: the latest steps cancelled because a step they wait for failed (for display)
        self._cut: deque[TaskRecord] = deque(maxlen=100)
        self._seq = 0
        self._closed = False
        self._paused = False

    # ----------------------------------------------------------------- recovery
    @classmethod
    def recover(
        cls, storage: Storage, config: QueueConfig | None = None, **kwargs: object
    ) -> QueueCore:
        """Rebuild a core from what ``storage`` holds (after a restart or crash).

        Leases come back as they were: a live worker can still ack with its token, and
        the lease of a dead one expires as usual.
        """
        core = cls(config, storage, **kwargs)  # type: ignore[arg-type]
        state = storage.load()
        for rec in sorted(state.tasks, key=lambda r: r.seq):
            core._apply(rec)
            core._seq = max(core._seq, rec.seq)
        for sched in state.schedules:
            core._apply_schedule(sched)
        return core

    # ------------------------------------------------------------------ enqueue
    def close(self) -> None:
        """Refuse further enqueues; running work can still finish."""
        self._closed = True

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def pause(self) -> None:
        """Hand out no tasks until :meth:`resume` (enqueues go on; running work finishes)."""
        self._paused = True

    def resume(self) -> None:
        """Hand out tasks again."""
        self._paused = False

    @property
    def paused(self) -> bool:
        """Whether claims are paused."""
        return self._paused

    def enqueue(self, new: NewTask, now: float) -> TaskRecord:
        """Add one task; see :meth:`enqueue_many`."""
        return self.enqueue_many([new], now)[0]

    def enqueue_many(self, news: Sequence[NewTask], now: float) -> list[TaskRecord]:
        """Add tasks in one journal write; all or nothing.

        A task id that already exists with the same task name and payload returns the
        existing record (idempotent enqueue); with another payload it is an error.

        Raises:
            QueueClosedError, QueueFullError, DuplicateTaskError, PayloadTooLargeError,
            InvalidPriorityError, InvalidScheduleError, ValueError (bad task id).
        """
        if self._closed:
            raise QueueClosedError("the queue is closed: no new tasks are accepted")
        out: list[TaskRecord] = []
        fresh: dict[str, TaskRecord] = {}
        limit = self.config.max_payload_bytes
        seq = self._seq
        for new in news:
            check_new_task(new)  # what the journal could not store fails this call only
            priority = validate_priority(new.priority)
            if len(new.payload) > limit // 4 and (size := utf8(new.payload, "payload")) > limit:
                raise PayloadTooLargeError(new.task_name, size, limit)
            task_id = self._new_id() if new.task_id is None else new.task_id
            existing = fresh.get(task_id) or self._tasks.get(task_id)
            if existing is None and task_id in self._schedules:
                raise DuplicateTaskError(task_id, "a schedule has this id: schedules and "
                                         "tasks share one id space")
            if existing is not None:
                if existing.task_name != new.task_name or existing.payload != new.payload:
                    raise DuplicateTaskError(task_id)
                out.append(existing)
                continue
            due = now if new.run_at is None else _check_time(new.run_at)
            if new.delay is not None:
                if new.run_at is not None:
                    raise InvalidScheduleError("give run_at or delay, not both")
                due = now + _check_delay(new.delay)
            # Members through module constants: an Enum member read costs ~2 us in 3.11.
            state = _READY if due <= now else _SCHEDULED
            if new.step is not None and new.step.parents:
                for parent in new.step.parents:
                    if parent not in fresh and parent not in self._tasks:
                        raise InvalidWorkflowError(
                            f"step {task_id!r} waits for {parent!r}, which is not in the "
                            "queue (a parent is enqueued before its children)")
                state = _PENDING
            seq += 1
            rec = TaskRecord(
                id=task_id,
                task_name=new.task_name,
                payload=new.payload,
                priority=priority,
                pool=new.pool,
                state=state,
                seq=seq,
                created_at=now,
                due_at=due,
                updated_at=now,
                retry=new.retry,
                timeout=new.timeout,
                headers=new.headers or None,
                limit=new.limit,
                step=new.step,
            )
            if state is _PENDING:  # parents that already ended decide it now
                rec = self._resolved(rec, lambda i: fresh.get(i) or self._tasks.get(i),
                                     now) or rec
            fresh[task_id] = rec
            out.append(rec)
        max_size = self.config.max_size
        if max_size is not None and fresh and self.size() + len(fresh) > max_size:
            raise QueueFullError(max_size, len(fresh))
        if fresh:
            self._commit(_Batch(tasks=list(fresh.values())))
            self._seq = seq
        return out

    # ------------------------------------------------------------ claim/report
    def claim(
        self, worker: str, max_n: int, now: float, pool: str = "default", *, idle: bool = True,
        prefetch: int = 0, no_worse_than: float | None = None, confirm_starts: bool = False,
    ) -> list[Lease]:
        """Lease up to ``max_n`` of the best ready tasks of ``pool`` to ``worker``.

        ``max_n`` is the worker's free slots: 0 asks for prefetch alone. ``prefetch``
        more may follow, but only of the first task's priority and at most half of what
        is left of it. While a lower-priority task of the pool is ready, prefetch goes
        only to a worker that confirms its starts (``confirm_starts``): its prefetched
        leases are marked, and no claim gets the lower work until they have started, so
        a prefetched high never waits while another worker starts a low (priority holds
        under prefetch, DESIGN promise 2). Without confirmations (a sharded queue's
        worker, a client's dequeue) there is no prefetch while lower work is ready.

        A *suspect* (a task whose worker died under it before) is leased alone, and only
        to an ``idle`` worker (one running nothing), so a poison task cannot take healthy
        neighbours down with it; a suspect ready for longer than ``lease_ttl`` goes to
        any worker, so it cannot starve behind a busy pool.

        ``confirm_starts``: the worker will say when each lease marked ``confirm`` has
        started (:meth:`started`). A lease is so marked when lower-priority work is
        ready in its pool, and until its start is confirmed (or it ends, or its lease is
        gone) no claim gets work of lower priority: the last high starts before the
        first low, whatever the delays between the queue and each worker.

        ``no_worse_than`` hands out only tasks whose rank (:meth:`top_rank`) is at most
        this: a worker of a sharded queue passes the best rank it knows of in the other
        shards, so it never takes lower-priority work here while better work waits there.
        """
        if isinstance(max_n, bool) or not isinstance(max_n, int) or max_n < 0:
            raise ValueError(f"max_n must be an int >= 0, got {max_n!r}")
        if isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 0:
            raise ValueError(f"prefetch must be an int >= 0, got {prefetch!r}")
        if now > self._now:
            self._now = now
        if self._buckets:
            self._refill(now)
        index = self._ready.get(pool)
        if not index or self._paused:
            return []
        if not idle and self._emptying_for_suspect(pool, worker):
            return []  # this worker empties, so that a waiting suspect can run alone
        ttl = self.config.lease_ttl
        bar = self._unconfirmed_top(pool)
        batch = _Batch()
        skipped: list[TaskRecord] = []
        #: per limited group and rate bucket, what this claim takes
        taking: Counter[tuple[str, str, str | None]] = Counter()
        spending: Counter[str] = Counter()
        capped = False
        first = 0
        while len(batch.tasks) < max_n + prefetch:
            if len(batch.tasks) >= max_n:
                if not capped:
                    # At most half of what is left of this priority: the tail of a level
                    # is spread over the workers, not left in one worker's buffer while
                    # others already run the next level down.
                    if batch.tasks:
                        first = batch.tasks[0].priority
                    else:  # a busy worker asks only for prefetch (max_n=0)
                        top = index.peek()
                        if top is None:
                            break
                        first = self._tasks[top].priority
                    taken = sum(1 for r in batch.tasks if r.priority == first)
                    lowest = self._lowest_ready(pool)
                    below = lowest is not None and lowest < first
                    prefetch = 0 if below and not confirm_starts else min(
                        prefetch, (self._ready_counts[(pool, first)] - taken) // 2)
                    capped = True
                    if len(batch.tasks) >= max_n + prefetch:
                        break
                head = index.peek()
                # A suspect (back in its old place after a loss) waits for an idle worker:
                # prefetch goes on past those of this level, never past a higher one, and
                # not past one that has waited SUSPECT_WAIT_S: then this busy worker, if
                # it gets nothing now, is the one emptied for it.
                while head is not None and (suspect := self._tasks[head]).lost_attempts \
                        and suspect.priority == first:
                    if now - ready_since(suspect) >= SUSPECT_WAIT_S:
                        if not batch.tasks and pool not in self._emptying:
                            self._emptying[pool] = (worker, suspect.id)
                        break
                    index.pop()
                    skipped.append(suspect)
                    head = index.peek()
                if head is None or (self._tasks[head].priority != first
                                    or self._tasks[head].lost_attempts):
                    break
            if no_worse_than is not None and (
                    (rank := index.top_rank()) is None or rank > no_worse_than):
                break
            if bar is not None and (top := index.peek()) is not None and (
                    self._tasks[top].priority < bar):
                self._held_back.add(pool)  # waits for a higher task's start
                break
            task_id = index.pop()
            if task_id is None:
                break
            rec = self._tasks[task_id]
            limit = rec.limit
            if limit is not None and not self._may_take(rec, limit, now, taking, spending):
                continue  # held back by its limit (still ready): the next task's turn
            if rec.lost_attempts:
                # (How long it has waited as a suspect: since its loss, not since its
                # due time, which it keeps.)
                waited = now - ready_since(rec)
                if batch.tasks or not (idle or waited > ttl):
                    skipped.append(rec)
                    if not batch.tasks and waited >= SUSPECT_WAIT_S and (
                            pool not in self._emptying):
                        # It has waited long enough for an idle worker: this one gets
                        # nothing more until it is idle, and then the suspect.
                        self._emptying[pool] = (worker, rec.id)
                        break
                    continue
                max_n, prefetch = 1, 0  # the suspect runs alone
            batch.tasks.append(
                rec.evolve(
                    state=TaskState.LEASED,
                    attempts=rec.attempts + 1,
                    lease_token=rec.lease_token + 1,
                    worker=worker,
                    lease_expires_at=now + ttl,
                    deadline=None if rec.timeout is None else now + rec.timeout,
                    started_at=now,
                    updated_at=now,
                )
            )
            if limit is not None:
                self._took(rec, limit, now, taking, spending)
        for rec in skipped:
            index.push(rec.id, rec.priority, rec.due_at, rec.seq)
        try:
            self._commit(batch)
        except BaseException:
            for leased in batch.tasks:
                old = self._tasks[leased.id]
                if old.limit is None:
                    index.push(old.id, old.priority, old.due_at, old.seq)
                else:
                    self._ready_limited(old, index)
            raise
        for bucket_key, n in spending.items():
            self._buckets[bucket_key].take(n, now)
        marked = set()
        lowest = self._lowest_ready(pool) if confirm_starts and batch.tasks else None
        if lowest is not None:
            for r in batch.tasks:
                if r.priority > lowest:
                    self._unconfirmed[r.id] = (pool, r.priority, r.lease_token)
                    heapq.heappush(self._unconfirmed_heaps.setdefault(pool, []),
                                   (-r.priority, r.id, r.lease_token))
                    marked.add(r.id)
        return [
            Lease(r.id, r.lease_token, r.task_name, r.payload, r.attempts, r.priority, r.pool,
                  now + ttl, r.timeout, r.retry, r.lost_attempts > 0, r.id in marked,
                  r.headers, None if r.step is None else _feed_of(r))
            for r in batch.tasks
        ]

    # ------------------------------------------------------------------ limits
    def _group(self, rec: TaskRecord, limit: Limit) -> _Group:
        group_key = (rec.pool, rec.task_name, limit.key)
        group = self._groups.get(group_key)
        if group is None:
            group = self._groups[group_key] = _Group(ReadyIndex(self.config.aging_rate))
        return group

    def _may_take(self, rec: TaskRecord, limit: Limit, now: float,
                  taking: Counter[tuple[str, str, str | None]], spending: Counter[str]) -> bool:
        """Whether a claim may lease ``rec`` (just popped, its group's head) under its
        limits and what the claim takes already; if not, the task goes back to wait in
        its group, which leaves the line until a lease of it ends (concurrency) or its
        bucket's timer fires (rate)."""
        group = self._group(rec, limit)
        c = limit.concurrency
        blocked = c is not None and group.running + taking[(rec.pool, rec.task_name,
                                                              limit.key)] >= c
        if not blocked and limit.rate is not None:
            bucket_key = f"{rec.pool}\x00{rec.task_name}"
            bucket = self._buckets.get(bucket_key)
            if bucket is None:
                rate = limit.rate
                bucket = self._buckets[bucket_key] = _Bucket(
                    rate, max(1.0, rate * RATE_BURST_S), now)
            bucket.rate = limit.rate
            short = spending[bucket_key] + 1 - bucket.available(now)
            if short > 1e-6:  # (not float dust: the timer would fire at once, again)
                blocked = True
                group.parked = True
                bucket.parked.append(group)
                if len(bucket.parked) == 1:  # the first to wait arms the refill timer
                    self._bucket_timers.set(bucket_key, now + max(short / bucket.rate, 1e-6))
        if blocked:
            group.head = None
            group.waiting.push(rec.id, rec.priority, rec.due_at, rec.seq)
        return not blocked

    def _took(self, rec: TaskRecord, limit: Limit, now: float,
              taking: Counter[tuple[str, str, str | None]], spending: Counter[str]) -> None:
        """A claim leases ``rec``: its group's next task takes its place in line."""
        group_key = (rec.pool, rec.task_name, limit.key)
        group = self._groups[group_key]
        group.head = None
        taking[group_key] += 1
        if limit.rate is not None:
            spending[f"{rec.pool}\x00{rec.task_name}"] += 1
        self._next_turn(group, rec.pool, taking[group_key], now)

    def _next_turn(self, group: _Group, pool: str, leasing: int, now: float) -> None:
        """Put ``group``'s best waiting task in line if its limits let it run now.

        A keyed group goes to the back of its priority (fair turns between keys); a
        keyless one keeps its own place (first in, first out, as if unlimited).
        """
        if group.head is not None or group.parked:
            return
        top = group.waiting.peek()
        if top is None:
            return
        rec = self._tasks[top]
        limit = rec.limit
        if limit is None or (limit.concurrency is not None
                             and group.running + leasing >= limit.concurrency):
            return
        group.waiting.discard(top)
        group.head = top
        if limit.key is None:
            self._ready[pool].push(top, rec.priority, rec.due_at, rec.seq)
        else:
            self._turns += 1
            self._ready[pool].push(top, rec.priority, max(rec.due_at, now), self._turns)
        self._held_back.add(pool)  # parked claims of the pool should look again

    def _ready_limited(self, rec: TaskRecord, index: ReadyIndex) -> None:
        """A limited task becomes ready: in line if its group has no task there and may
        run, in place of the one there if it goes first (a higher priority, or older: a
        released or retried task keeps its place among its key's), else waiting."""
        limit = rec.limit
        assert limit is not None
        group = self._group(rec, limit)
        head = group.head
        if head is None:
            c = limit.concurrency
            if not group.parked and (c is None or group.running < c):
                index.push(rec.id, rec.priority, rec.due_at, rec.seq)
                group.head = rec.id
                return
        elif (rec.priority, -rec.seq) > (self._tasks[head].priority, -self._tasks[head].seq):
            old = self._tasks[head]
            index.discard(head)
            group.waiting.push(head, old.priority, old.due_at, old.seq)
            index.push(rec.id, rec.priority, rec.due_at, rec.seq)
            group.head = rec.id
            return
        group.waiting.push(rec.id, rec.priority, rec.due_at, rec.seq)

    def _refill(self, now: float) -> int:
        """Put back in line the groups whose rate bucket has a token again."""
        due = self._bucket_timers.pop_due(now)
        back = 0
        for bucket_key in due:
            bucket = self._buckets[bucket_key]
            parked, bucket.parked = bucket.parked, []
            pool = bucket_key.split("\x00", 1)[0]
            for group in parked:
                group.parked = False
                if group.head is None and len(group.waiting):
                    self._next_turn(group, pool, 0, now)
                    back += 1
        return back

    def throttled(self) -> dict[str, int]:
        """Ready tasks held out of line by a limit, per task name: waiting for a lease
        of their key to end, for a rate token, or for their key's turn."""
        out: Counter[str] = Counter()
        for (_, name, _), group in self._groups.items():
            if len(group.waiting):
                out[name] += len(group.waiting)
        return dict(out)

    def _emptying_for_suspect(self, pool: str, worker: str) -> bool:
        """Whether ``worker`` is the one emptied for a suspect of ``pool`` that is still
        waiting (a reservation whose suspect ran or ended elsewhere is dropped)."""
        held = self._emptying.get(pool)
        if held is None:
            return False
        rec = self._tasks.get(held[1])
        if rec is None or rec.state is not TaskState.READY or not rec.lost_attempts:
            del self._emptying[pool]
            return False
        return held[0] == worker

    def started(self, refs: Iterable[tuple[str, int]]) -> None:
        """A worker confirms that these leases (task id, lease token; marked ``confirm``)
        have started. A late confirmation of an older lease of the same task (its attempt
        expired, the task was leased again) confirms nothing: the new lease has not
        started, and lower work keeps waiting for it."""
        for task_id, token in refs:
            held = self._unconfirmed.get(task_id)
            if held is not None and held[2] == token:
                del self._unconfirmed[task_id]

    def take_held_back(self) -> set[str]:
        """The pools where a claim got nothing while a start was unconfirmed (then
        forgotten): their parked claims should look again."""
        pools, self._held_back = self._held_back, set()
        return pools

    def _unconfirmed_top(self, pool: str) -> int | None:
        """The highest priority of ``pool``'s leases whose start is not confirmed; ends
        of attempts and of leases (done, released, expired, re-leased) confirm too."""
        if not self._unconfirmed:
            self._unconfirmed_heaps.clear()
            return None
        # Once a claim per call; with marked prefetch hundreds may be out, so not a scan.
        heap = self._unconfirmed_heaps.get(pool)
        while heap:
            neg, task_id, token = heap[0]
            if self._unconfirmed.get(task_id) == (pool, -neg, token):
                if self._current(task_id, token) is not None:
                    return -neg
                del self._unconfirmed[task_id]
            heapq.heappop(heap)
        return None

    def _current(self, task_id: str, token: int) -> TaskRecord | None:
        rec = self._tasks.get(task_id)
        if rec is None or rec.state is not TaskState.LEASED or rec.lease_token != token:
            return None
        return rec

    def complete_many(self, outcomes: Iterable[Outcome], now: float) -> list[TaskRecord | None]:
        """Record the ends of many attempts in one write.

        Returns, per outcome, the new record, or ``None`` where the lease was stale
        (a fenced late report changes nothing).
        """
        batch = _Batch()
        out: list[TaskRecord | None] = []
        seen: set[str] = set()
        if now > self._now:
            self._now = now
        for o in outcomes:
            rec = self._current(o.task_id, o.token)
            if rec is None or o.task_id in seen:
                out.append(None)
                continue
            seen.add(o.task_id)
            o = self._checked(o)  # one bad outcome fails its own attempt, not the batch
            if o.failure is None:
                new = rec.evolve(
                    state=TaskState.SUCCEEDED, result=o.result, finished_at=now, updated_at=now,
                    worker=None, lease_expires_at=None, deadline=None,
                )
            else:
                new = self._after_failure(rec, o.failure, now)
                if o.failure.reason == "unknown_task" and rec.schedule_id is not None:
                    self._pause_unknown(rec, batch)
            batch.tasks.append(new)
            out.append(new)
        self._commit(batch)
        return out

    def _pause_unknown(self, rec: TaskRecord, batch: _Batch) -> None:
        """A schedule's run found no class for its task type on the workers: pause the
        schedule (with the reason, in the same write) instead of failing a run each
        period; ``resume_schedule`` starts it again once the code is deployed."""
        sched = self._schedules.get(rec.schedule_id or "")
        if sched is None or sched.paused_reason is not None or any(
                s.id == sched.id for s in batch.schedules):
            return
        batch.schedules.append(replace(sched, paused_reason=(
            f"no class for task {rec.task_name!r} on the workers: deploy the code that "
            "defines it (or ship it from a client), then resume the schedule")))

    def _checked(self, o: Outcome) -> Outcome:
        """``o``, or, where it cannot be stored faithfully (a result that is not valid
        text or is over ``max_result_bytes``; a failure of the wrong shape), a failure
        of its attempt that says so. Error texts that are not valid UTF-8 are escaped."""
        f = o.failure
        if f is not None:
            if not isinstance(f, Failure) or not isinstance(f.error, ErrorInfo):
                return _refused(o, "invalid_result",
                                f"a failure the queue cannot read ({type(f).__name__})")
            e = f.error
            texts = (e.type, e.message, e.traceback)
            if all(t is None or (isinstance(t, str) and _valid_text(t)) for t in texts) and (
                    f.reason is None or (isinstance(f.reason, str) and _valid_text(f.reason))):
                return o
            error = ErrorInfo(*(None if t is None else _escaped(t) for t in texts))
            reason = None if f.reason is None else _escaped(f.reason)
            return Outcome(o.task_id, o.token, failure=Failure(
                error, bool(f.retryable), f.retry_delay, reason))
        if o.result is None:
            return o
        if not isinstance(o.result, str):
            return _refused(o, "invalid_result",
                            f"result must be JSON text, got {type(o.result).__name__}")
        try:
            size = utf8(o.result, "result")
        except InvalidTaskError as err:
            return _refused(o, "invalid_result", str(err))
        limit = self.config.max_result_bytes
        if size > limit:
            return _refused(o, "result_too_large",
                            f"result is {size} bytes of JSON, over the limit of {limit}: "
                            "store it elsewhere and return a reference")
        return o

    def ack(self, task_id: str, token: int, result: str, now: float) -> TaskRecord:
        """Record success. Raises :class:`StaleLeaseError` if the lease is not current."""
        return self._one(Outcome(task_id, token, result=result), now)

    def ack_many(self, items: Iterable[tuple[str, int, str]], now: float) -> list[bool]:
        """Record many successes in one write; ``False`` marks a stale lease."""
        outs = self.complete_many((Outcome(i, t, result=r) for i, t, r in items), now)
        return [o is not None for o in outs]

    def fail(self, task_id: str, token: int, failure: Failure, now: float) -> TaskRecord:
        """Record a failed attempt; the retry policy decides retry or dead."""
        return self._one(Outcome(task_id, token, failure=failure), now)

    def _one(self, outcome: Outcome, now: float) -> TaskRecord:
        rec = self.complete_many([outcome], now)[0]
        if rec is None:
            raise StaleLeaseError(outcome.token)
        return rec

    def release(self, task_id: str, token: int, now: float) -> TaskRecord:
        """Give a leased task back unrun; the attempt does not count."""
        rec = self._current(task_id, token)
        if rec is None:
            raise StaleLeaseError(token)
        new = _unleased(rec, now).evolve(state=TaskState.READY, attempts=rec.attempts - 1)
        self._commit(_Batch(tasks=[new]))
        return new

    def heartbeat(self, refs: Iterable[tuple[str, int]], now: float) -> list[bool]:
        """Extend current leases by ``lease_ttl``; ``False`` marks a stale one (stop it)."""
        batch = _Batch()
        out: list[bool] = []
        for task_id, token in refs:
            rec = self._current(task_id, token)
            out.append(rec is not None)
            if rec is not None:
                batch.tasks.append(
                    rec.evolve(lease_expires_at=now + self.config.lease_ttl, updated_at=now)
                )
        self._commit(batch)
        return out

    def reconcile(self, worker: str, held: Iterable[str], now: float) -> list[str]:
        """Release the leases of ``worker`` that it does not hold: their claim replies
        were lost on the way, so it never ran them (no attempt is counted)."""
        keep = set(held)
        lost = sorted(self._by_worker.get(worker, set()) - keep)
        batch = _Batch(tasks=[
            _unleased(self._tasks[i], now).evolve(state=TaskState.READY,
                    attempts=self._tasks[i].attempts - 1)
            for i in lost
        ])
        self._commit(batch)
        return lost

    def renew_all_leases(self, now: float) -> int:
        """Give every lease a fresh ``lease_ttl`` (after a restart: while the queue was
        down, no worker could renew, and a live one must not lose its task for that)."""
        refs = [(i, self._tasks[i].lease_token) for ids in self._by_worker.values() for i in ids]
        self.heartbeat(refs, now)
        return len(refs)

    def worker_lost(self, worker: str, now: float) -> list[str]:
        """Return the leases of a worker known to be dead; each counts a lost attempt."""
        ids = sorted(self._by_worker.get(worker, ()))
        batch = _Batch(tasks=[self._after_loss(self._tasks[i], now) for i in ids])
        self._commit(batch)
        for pool, (emptied, _) in list(self._emptying.items()):
            if emptied == worker:  # the next busy claimer of the pool is emptied instead
                del self._emptying[pool]
        return ids

    def _after_failure(self, rec: TaskRecord, failure: Failure, now: float) -> TaskRecord:
        err = failure.error
        base = _unleased(rec, now).evolve(error=err, history=with_attempt(rec.history, Attempt(
            rec.attempts, rec.started_at, now, "failed", err.type, err.message)))
        if not failure.retryable:
            return _dead(base, now, failure.reason or "non_retryable")
        if rec.attempts >= rec.retry.max_attempts:
            return _dead(base, now, failure.reason or "max_attempts")
        delay = finite(failure.retry_delay)  # a client's value: never trusted to be a number
        if delay is None or not 0 <= delay <= MAX_RETRY_DELAY_S:
            delay = rec.retry.delay(rec.attempts, self._rng.random())
        return base.evolve(state=TaskState.FAILED, due_at=now + delay)

    def _after_loss(self, rec: TaskRecord, now: float) -> TaskRecord:
        lost = rec.lost_attempts + 1
        err = ErrorInfo(
            "WorkerLostError",
            f"worker {rec.worker} died or stopped renewing its lease (lost attempt {lost})",
        )
        base = _unleased(rec, now).evolve(
            lost_attempts=lost, error=err, history=with_attempt(rec.history, Attempt(
                rec.attempts, rec.started_at, now, "lost", err.type, err.message)))
        if lost >= rec.retry.max_lost_attempts or rec.attempts >= rec.retry.max_attempts:
            return _dead(base, now, "worker_lost")
        # Ready again at once and in its old place in line: its due time is kept, so it
        # does not wait behind everything that fell due since (a 10-minute chaos run saw
        # such tasks wait 190 s behind their priority level). It comes back a suspect,
        # leased alone to an idle worker (see claim), so a poison task cannot take the
        # tasks that shared its dying worker down with it again.
        return base.evolve(state=TaskState.READY)

    # --------------------------------------------------------------------- time
    def tick(self, now: float) -> TickReport:
        """Do what time demands: promote due tasks, expire leases, enforce timeouts,
        fire periodic schedules and purge old results. One journal write."""
        batch = _Batch()
        if self._buckets:
            self._now = max(self._now, now)
            self._refill(now)
        timer_due = self._timers.pop_due(now)
        deadline_due = self._deadlines.pop_due(now)
        lease_due = self._leases.pop_due(now)
        sched_due = self._schedule_timers.pop_due(now)
        purge_due = self._purges.pop_due(now)
        if self._children and purge_due:
            # A succeeded step whose result a pending step (a chord's callback) still
            # needs is kept until that step's other parents end.
            kept = [i for i in purge_due if i in self._children]
            for task_id in kept:
                self._purges.set(task_id, now + self.config.result_ttl)
            if kept:
                purge_due = [i for i in purge_due if i not in self._children]
        touched: set[str] = set()
        for task_id in timer_due:
            rec = self._tasks[task_id]
            batch.tasks.append(rec.evolve(state=TaskState.READY, updated_at=now))
        timed_out: list[tuple[str, str]] = []
        for task_id in deadline_due:
            rec = self._tasks[task_id]
            timed_out.append((task_id, rec.worker or ""))
            err = ErrorInfo("TaskTimeoutError", f"attempt {rec.attempts} exceeded its "
                                                f"timeout of {rec.timeout}s")
            new = self._after_failure(rec, Failure(err), now)
            if new.state is TaskState.DEAD:
                new = new.evolve(reason="timeout")
            batch.tasks.append(new)
            touched.add(task_id)
        expired = [i for i in lease_due if i not in touched]
        batch.tasks.extend(self._after_loss(self._tasks[i], now) for i in expired)
        fired = 0
        fresh_ids: set[str] = set()
        for sched_id in sched_due:
            sched = self._schedules[sched_id]
            plan = plan_fires(sched.spec, sched.next_due, now, sched.misfire,
                              self.config.misfire_grace)
            for when in plan.run_now:
                task_id = f"{sched.id}@{int(when * 1000)}"
                if task_id in self._tasks or task_id in fresh_ids:
                    continue
                fresh_ids.add(task_id)
                self._seq += 1
                batch.tasks.append(_task_of(sched, task_id, self._seq, when, now))
                fired += 1
            batch.schedules.append(replace(
                sched, next_due=plan.next_due, runs=sched.runs + len(plan.run_now),
                last_run=max(plan.run_now) if plan.run_now else sched.last_run))
        batch.delete_tasks.extend(purge_due)
        try:
            self._commit(batch)
        except BaseException:
            for task_id in timer_due:
                self._timers.set(task_id, self._tasks[task_id].due_at)
            for task_id in deadline_due:
                self._deadlines.set(task_id, self._tasks[task_id].deadline or now)
            for task_id in lease_due:
                self._leases.set(task_id, self._tasks[task_id].lease_expires_at or now)
            for sched_id in sched_due:
                self._schedule_timers.set(sched_id, self._schedules[sched_id].next_due)
            for task_id in purge_due:
                self._purges.set(task_id, now)
            self._seq -= fired
            raise
        return TickReport(
            promoted=len(timer_due) + fired,
            expired=tuple(expired),
            timed_out=tuple(timed_out),
            fired=fired,
            purged=len(purge_due),
            dead=tuple(r.id for r in batch.tasks if r.state is TaskState.DEAD),
        )

    def next_wakeup(self) -> float | None:
        """The earliest time at which :meth:`tick` has something to do."""
        times = [
            t
            for t in (
                self._timers.next_time(),
                self._leases.next_time(),
                self._deadlines.next_time(),
                self._schedule_timers.next_time(),
                self._purges.next_time(),
                self._bucket_timers.next_time(),
            )
            if t is not None
        ]
        return min(times) if times else None

    # ---------------------------------------------------------------- schedules
    def add_schedule(
        self,
        *,
        schedule_id: str,
        task_name: str,
        payload: str,
        spec: ScheduleSpec,
        now: float,
        priority: int,
        pool: str = "default",
        misfire: MisfirePolicy = MisfirePolicy.RUN_ONCE,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
    ) -> ScheduleRecord:
        """Create a periodic schedule (idempotent for the same id, task and payload).

        Schedules and tasks share one id space (``cancel`` takes either), and a schedule
        follows the enqueue rules: refused by a closed queue, and its payload within the
        size limit.
        """
        existing = self._schedules.get(_check_id(schedule_id))
        if existing is not None:
            if (existing.task_name, existing.payload, existing.spec) != (task_name, payload, spec):
                raise DuplicateTaskError(schedule_id)
            return existing
        if self._closed:
            raise QueueClosedError("the queue is closed: no new schedules are accepted")
        if schedule_id in self._tasks:
            raise DuplicateTaskError(schedule_id, "a task has this id: schedules and tasks "
                                     "share one id space")
        check_new_task(NewTask(task_name, payload, 0, pool, retry=retry or RetryPolicy(),
                               timeout=timeout))
        limit = self.config.max_payload_bytes
        if (size := utf8(payload, "payload")) > limit:
            raise PayloadTooLargeError(task_name, size, limit)
        sched = ScheduleRecord(
            id=schedule_id,
            task_name=task_name,
            payload=payload,
            priority=validate_priority(priority),
            pool=pool,
            spec=spec,
            misfire=MisfirePolicy(misfire),
            next_due=next_fire(spec, now),
            created_at=now,
            retry=retry or RetryPolicy(),
            timeout=timeout,
        )
        self._commit(_Batch(schedules=[sched]))
        return sched

    def remove_schedule(self, schedule_id: str) -> ScheduleRecord:
        """Stop a periodic schedule; tasks it already created stay."""
        sched = self._schedules.get(schedule_id)
        if sched is None:
            raise TaskNotFoundError(schedule_id)
        self._write(delete_schedules=[schedule_id])
        del self._schedules[schedule_id]
        self._schedule_timers.discard(schedule_id)
        return sched

    def schedules(self) -> list[ScheduleRecord]:
        """All periodic schedules."""
        return list(self._schedules.values())

    def schedules_due_in(self, now: float) -> dict[str, float]:
        """Seconds until the next run of an active schedule, per pool (negative: late)."""
        out: dict[str, float] = {}
        for sched in self._schedules.values():
            if sched.paused_reason is None:
                left = sched.next_due - now
                out[sched.pool] = min(left, out.get(sched.pool, left))
        return out

    def resume_schedule(self, schedule_id: str, now: float) -> ScheduleRecord:
        """Let a paused schedule create runs again, from its next fire after ``now``.

        Raises:
            TaskNotFoundError: no such schedule.
        """
        sched = self._schedules.get(schedule_id)
        if sched is None:
            raise TaskNotFoundError(schedule_id)
        if sched.paused_reason is None:
            return sched
        new = replace(sched, paused_reason=None, next_due=next_fire(sched.spec, now))
        self._commit(_Batch(schedules=[new]))
        return new

    # ------------------------------------------------------------ reads/control
    def get(self, task_id: str) -> TaskRecord:
        """The record of a task. Raises :class:`TaskNotFoundError`."""
        rec = self._tasks.get(task_id)
        if rec is None:
            raise TaskNotFoundError(task_id)
        return rec

    def task_ids(self) -> list[str]:
        """Every task id held (finished ones until their TTL ends)."""
        return list(self._tasks)

    def find(self, task_id: str) -> TaskRecord | None:
        """The record of a task, or ``None``."""
        return self._tasks.get(task_id)

    def created(self) -> int:
        """How many tasks this core has created (its sequence number)."""
        return self._seq

    def top_rank(self, pool: str = "default") -> float | None:
        """The rank of the task a claim on ``pool`` would get next (lower goes first;
        None when none is ready), comparable across the shards of a queue."""
        index = self._ready.get(pool)
        return index.top_rank() if index else None

    def peek(self, pool: str = "default") -> TaskRecord | None:
        """The task a claim on ``pool`` would get next, without claiming it."""
        index = self._ready.get(pool)
        task_id = index.peek() if index else None
        return None if task_id is None else self._tasks[task_id]

    def cancel(self, task_id: str, now: float) -> TaskRecord | ScheduleRecord:
        """Cancel a task (waiting or running), or stop a periodic schedule.

        A running (leased) task ends ``cancelled`` at once, in the journal: its lease is
        gone, so the worker's outcome, whenever it comes, is fenced, and it is never
        retried. The record keeps the lease's ``worker`` and ``lease_token`` (reason
        ``cancelled_running``), so the worker that holds it learns of the cancel from
        :meth:`cancelled_leases`, also after a restart of the queue.

        Raises:
            TaskNotFoundError: no such task or schedule.
            InvalidStateError: the task already finished (succeeded or dead).
        """
        rec = self._tasks.get(task_id)
        if rec is None:
            if task_id in self._schedules:
                return self.remove_schedule(task_id)
            raise TaskNotFoundError(task_id)
        if rec.state is TaskState.CANCELLED:
            return rec
        if rec.state is TaskState.LEASED:
            new = rec.evolve(state=TaskState.CANCELLED, finished_at=now, updated_at=now,
                             lease_expires_at=None, deadline=None, reason="cancelled_running")
            self._commit(_Batch(tasks=[new]))
            return new
        if rec.state not in (TaskState.READY, TaskState.SCHEDULED, TaskState.FAILED,
                             TaskState.PENDING):
            raise InvalidStateError(task_id, rec.state.value, "cancel")
        new = rec.evolve(state=TaskState.CANCELLED, finished_at=now, updated_at=now)
        self._commit(_Batch(tasks=[new]))
        return new

    def cancelled_leases(self, refs: Iterable[tuple[str, int]]) -> list[str]:
        """Of the leases ``refs`` (task id, token) a worker runs, those whose task was
        cancelled while it ran that lease: the worker stops them."""
        out = []
        for task_id, token in refs:
            rec = self._tasks.get(task_id)
            if rec is not None and rec.state is TaskState.CANCELLED and (
                    rec.lease_token == token and rec.reason == "cancelled_running"):
                out.append(task_id)
        return out

    def set_progress(self, updates: Iterable[tuple[str, int, float, str | None]]) -> int:
        """Note the progress of running attempts (task id, token, fraction, message):
        kept in memory only, shown while the task is held and after it ends; a stale
        lease's update is dropped. Returns how many were taken."""
        taken = 0
        for task_id, token, fraction, message in updates:
            if self._current(task_id, token) is not None:
                self._progress[task_id] = (token, fraction, message)
                taken += 1
        return taken

    def progress(self, task_id: str) -> tuple[float, str | None] | None:
        """The last progress reported by the task's current (or last) attempt."""
        got = self._progress.get(task_id)
        rec = self._tasks.get(task_id)
        if got is None or rec is None or rec.lease_token != got[0]:
            return None
        return got[1], got[2]

    def retry_dead(self, task_id: str, now: float) -> TaskRecord:
        """Put a dead task back as ready, with fresh attempt counts."""
        rec = self.get(task_id)
        if rec.state is not TaskState.DEAD:
            raise InvalidStateError(task_id, rec.state.value, "retry (only dead tasks can be)")
        new = rec.evolve(state=TaskState.READY, attempts=0, lost_attempts=0, reason=None,
                      due_at=now, finished_at=None, updated_at=now)
        self._commit(_Batch(tasks=[new]))
        return new

    def dead_letters(self, limit: int = 100) -> list[TaskRecord]:
        """Dead tasks, most recent first."""
        dead = [r for r in self._tasks.values() if r.state is TaskState.DEAD]
        dead.sort(key=lambda r: r.finished_at or 0.0, reverse=True)
        return dead[:limit]

    def browse(self, where: TaskFilter, limit: int, before: int | None = None,
               max_scan: int = MAX_SCAN) -> Page:
        """A page of tasks that match ``where``, newest first (see
        :meth:`rayqueue.core.browse.Order.page`): bounded work, no copy of every record."""
        return self._order.page(self._tasks, where, limit, before, max_scan)

    def purge(self, states: Iterable[TaskState]) -> list[str]:
        """Remove every finished task in ``states`` (succeeded, dead, cancelled), in one
        journal write: a restart does not bring them back. Returns their ids.

        Raises:
            InvalidStateError: a state that is not finished (a task in it is still
                waiting, running or due to be retried: cancel it first).
        """
        wanted = frozenset(states)
        unfinished = sorted(s.value for s in wanted if not s.terminal)
        if unfinished:
            raise PurgeRefusedError(unfinished)
        ids = [i for i, r in self._tasks.items() if r.state in wanted]
        self._commit(_Batch(delete_tasks=ids))
        return ids

    def size(self) -> int:
        """Unfinished tasks (everything not succeeded, dead or cancelled)."""
        counts = self._state_counts
        return len(self._tasks) - sum(counts[s] for s in TaskState if s.terminal)

    def ready_count(self, pool: str | None = None) -> int:
        """Ready tasks in ``pool`` (all pools if ``None``)."""
        if pool is None:
            return self._state_counts[TaskState.READY]
        index = self._ready.get(pool)
        return len(index) if index else 0

    def workers(self) -> list[str]:
        """Workers (and dequeuing clients) that hold leases now."""
        return list(self._by_worker)

    def leased_by_worker(self) -> dict[str, int]:
        """Leased tasks per worker (and dequeuing client)."""
        return {worker: len(ids) for worker, ids in self._by_worker.items()}

    def leased_by_pool(self) -> dict[str, int]:
        """Leased tasks per pool."""
        return {pool: n for pool, n in self._leased_counts.items() if n}

    def pools(self) -> list[str]:
        """Pools that have had ready tasks."""
        return list(self._ready)

    def stats(self) -> QueueStats:
        """Counts by state, ready tasks by pool and priority, and schedules."""
        ready_by_priority: dict[str, dict[int, int]] = {}
        throttled = self.throttled()
        for (pool, prio), n in self._ready_counts.items():
            if n:
                ready_by_priority.setdefault(pool, {})[prio] = n
        return QueueStats(
            by_state={s.value: self._state_counts[s] for s in TaskState},
            ready_by_priority=ready_by_priority,
            size=self.size(),
            schedules=len(self._schedules),
            max_size=self.config.max_size,
            closed=self._closed,
            paused=self._paused,
            throttled=sum(throttled.values()),
            throttled_by_task=throttled,
        )

    # ------------------------------------------------------------------ plumbing
    def _write(self, **kwargs: Sequence[object]) -> None:
        try:
            self.storage.write(**kwargs)  # type: ignore[arg-type]
        except StorageError:
            raise
        except Exception as err:
            raise StorageError(f"journal write failed ({type(err).__name__}: {err}); "
                               "nothing was changed, try again") from err

    def _lowest_ready(self, pool: str) -> int | None:
        """The lowest priority of a ready task of ``pool`` (None: nothing ready)."""
        return min((prio for (p, prio), n in self._ready_counts.items()
                    if n > 0 and p == pool), default=None)

    def take_unblocked(self) -> set[str]:
        """The pools where a workflow step became ready since the last call (then
        forgotten): their parked claims should look again."""
        pools, self._unblocked = self._unblocked, set()
        return pools

    def take_cancelled_steps(self) -> list[TaskRecord]:
        """The latest (at most 100) steps cancelled because a step they wait for did not
        succeed, since the last call (then forgotten): the dashboard lists them."""
        out = list(self._cut)
        self._cut.clear()
        return out

    def _cascade(self, batch: _Batch) -> tuple[set[str], list[TaskRecord]]:
        """Add to ``batch`` what its ended tasks mean for the steps that wait for them:
        a step whose parents have all succeeded becomes ready (with their results as
        its input), one whose parent died or was cancelled is cancelled, and so on down
        the workflow, all in the same journal write. Returns the pools with new ready
        steps."""
        children = self._children
        todo = [r for r in batch.tasks if r.state.terminal and r.id in children]
        if not todo:
            return set(), []
        at = {r.id: i for i, r in enumerate(batch.tasks)}
        tasks = batch.tasks

        def lookup(task_id: str) -> TaskRecord | None:
            pos = at.get(task_id)
            return tasks[pos] if pos is not None else self._tasks.get(task_id)

        pools: set[str] = set()
        cut: list[TaskRecord] = []
        while todo:
            parent = todo.pop()
            for child_id in children.get(parent.id, ()):
                child = lookup(child_id)
                if child is None or child.state is not TaskState.PENDING:
                    continue
                if parent.state is TaskState.SUCCEEDED:
                    new = self._resolved(child, lookup, parent.updated_at)
                    if new is None:
                        continue  # other parents still run (a chord's members)
                else:
                    new = _upstream_failed(child, parent, parent.updated_at)
                pos = at.get(child_id)
                if pos is None:
                    at[child_id] = len(tasks)
                    tasks.append(new)
                else:
                    tasks[pos] = new
                if new.state is TaskState.READY:
                    pools.add(new.pool)
                    continue
                cut.append(new)
                if new.id in children:
                    todo.append(new)
        return pools, cut

    def _resolved(self, child: TaskRecord, lookup: Callable[[str], TaskRecord | None],
                  now: float) -> TaskRecord | None:
        """``child`` (pending) once its parents decide it: ready with their results when
        all succeeded, cancelled when one died or was cancelled; None while any runs."""
        step = child.step
        assert step is not None
        parents = []
        for parent_id in reversed(step.parents):  # the last ones tend to end last
            parent = lookup(parent_id)
            if parent is None or parent.state in (TaskState.DEAD, TaskState.CANCELLED):
                return _upstream_failed(child, parent, now, parent_id)
            if parent.state is not TaskState.SUCCEEDED:
                return None
            parents.append(parent)
        inputs = None
        if step.feed is not None:
            results = [p.result or "null" for p in reversed(parents)]
            inputs = f"[{','.join(results)}]" if step.gather else results[0]
            limit = self.config.max_payload_bytes
            if len(inputs) > limit // 4 and (size := len(inputs.encode())) > limit:
                return _dead(child.evolve(updated_at=now, error=ErrorInfo(
                    "PayloadTooLargeError", f"the results of its parents are {size} bytes "
                    f"of JSON, over the payload limit of {limit}: return references to "
                    "data stored elsewhere")), now, "input_too_large")
        return child.evolve(state=TaskState.READY, inputs=inputs, due_at=now, updated_at=now)

    def _commit(self, batch: _Batch) -> None:
        if not (batch.tasks or batch.schedules or batch.delete_tasks):
            return
        moved = self._cascade(batch) if self._children else None
        self._write(tasks=batch.tasks, schedules=batch.schedules, delete_tasks=batch.delete_tasks)
        if moved is not None:
            self._unblocked |= moved[0]
            self._cut.extend(moved[1])
        for rec in batch.tasks:
            self._apply(rec)
        for sched in batch.schedules:
            self._apply_schedule(sched)
        for task_id in batch.delete_tasks:
            self._progress.pop(task_id, None)
            old = self._tasks.pop(task_id, None)
            if old is not None:
                self._leave(old)
                if old.limit is not None and old.state is TaskState.LEASED:
                    self._lease_ended(old)

    def _apply_schedule(self, sched: ScheduleRecord) -> None:
        self._schedules[sched.id] = sched
        if sched.paused_reason is None:
            self._schedule_timers.set(sched.id, sched.next_due)
        else:
            self._schedule_timers.discard(sched.id)

    def _apply(self, new: TaskRecord) -> None:
        old = self._tasks.get(new.id)
        if old is not None:
            self._leave(old)
        self._tasks[new.id] = new
        if old is None:
            self._order.add(new.id, new.seq, self._tasks)
        self._state_counts[new.state] += 1
        if old is not None and old.limit is not None and old.state is TaskState.LEASED and (
                new.state is not TaskState.LEASED):
            self._lease_ended(old)
        state = new.state
        if state is TaskState.READY:
            index = self._ready.get(new.pool)
            if index is None:
                index = self._ready[new.pool] = ReadyIndex(self.config.aging_rate)
            if new.limit is None:
                index.push(new.id, new.priority, new.due_at, new.seq)
            else:
                self._ready_limited(new, index)
            self._ready_counts[(new.pool, new.priority)] += 1
        elif state in WAITING:
            self._timers.set(new.id, new.due_at)
        elif state is TaskState.LEASED:
            self._leases.set(new.id, new.lease_expires_at or 0.0)
            if new.deadline is not None:
                self._deadlines.set(new.id, new.deadline)
            self._by_worker.setdefault(new.worker or "", set()).add(new.id)
            self._leased_counts[new.pool] += 1
            if new.limit is not None:
                self._group(new, new.limit).running += 1
        elif state is TaskState.PENDING:
            for parent in new.step.parents if new.step is not None else ():
                self._children.setdefault(parent, []).append(new.id)
        elif state is not TaskState.DEAD:
            self._purges.set(new.id, (new.finished_at or new.updated_at) + self.config.result_ttl)

    def _lease_ended(self, old: TaskRecord) -> None:
        """A lease of a limited task ended: its group may take a turn again."""
        group = self._group(old, old.limit)  # type: ignore[arg-type]
        if group.head is None:
            self._next_turn(group, old.pool, 0, self._now)

    def _leave(self, old: TaskRecord) -> None:
        self._state_counts[old.state] -= 1
        state = old.state
        if state is TaskState.READY:
            self._ready[old.pool].discard(old.id)
            self._ready_counts[(old.pool, old.priority)] -= 1
            if old.limit is not None:
                group = self._group(old, old.limit)
                if group.head == old.id:  # left the line otherwise than by a claim
                    group.head = None
                    self._next_turn(group, old.pool, 0, self._now)
                else:
                    group.waiting.discard(old.id)
        elif state in WAITING:
            self._timers.discard(old.id)
        elif state is TaskState.LEASED:
            self._leases.discard(old.id)
            self._deadlines.discard(old.id)
            self._leased_counts[old.pool] -= 1
            if old.limit is not None:
                self._group(old, old.limit).running -= 1
            held = self._by_worker.get(old.worker or "")
            if held is not None:
                held.discard(old.id)
                if not held:
                    del self._by_worker[old.worker or ""]
        elif state is TaskState.PENDING:
            for parent in old.step.parents if old.step is not None else ():
                waiting = self._children.get(parent)
                if waiting is not None:
                    waiting.remove(old.id)
                    if not waiting:
                        del self._children[parent]
        else:
            self._purges.discard(old.id)


def ready_since(rec: TaskRecord) -> float:
    """Since when ``rec`` has been waiting to start: its due time, or for a task whose
    last attempt was lost (which keeps its due time, its place in line), the loss. Read
    from the journaled history, so giving the lease back or a restart does not reset it."""
    history = rec.history
    if history and history[-1].outcome == "lost":
        return max(rec.due_at, history[-1].ended_at)
    return rec.due_at


def _unleased(rec: TaskRecord, now: float) -> TaskRecord:
    # keep in step with the success path of complete_many, which inlines this
    return rec.evolve(worker=None, lease_expires_at=None, deadline=None, updated_at=now)


def _dead(rec: TaskRecord, now: float, reason: str) -> TaskRecord:
    return rec.evolve(state=TaskState.DEAD, reason=reason, finished_at=now)


def _feed_of(rec: TaskRecord) -> tuple[str, str] | None:
    """What a leased workflow step's input field receives (None: not a fed step)."""
    step = rec.step
    if step is None or step.feed is None or rec.inputs is None:
        return None
    return step.feed, rec.inputs


def _upstream_failed(child: TaskRecord, parent: TaskRecord | None, now: float,
                     parent_id: str | None = None) -> TaskRecord:
    """``child`` cancelled because a step it waits for did not succeed; reason and error
    name the step that failed first (carried down the workflow unchanged)."""
    if parent is not None and parent.reason is not None and parent.reason.startswith(
            "workflow_failed") and parent.state is TaskState.CANCELLED:
        reason, error = parent.reason, parent.error
    else:
        if parent is None:
            what = f"step {parent_id} is gone (purged or never enqueued)"
            error = ErrorInfo.of("TaskNotFoundError", what)
        else:
            ended = ("was cancelled" if parent.state is TaskState.CANCELLED
                     else f"failed ({parent.reason or parent.state.value})")
            what = f"step {parent.id} ({parent.task_name}) {ended}"
            err = parent.error
            error = ErrorInfo.of(err.type if err else "TaskCancelledError",
                                 f"{what}: {err.message}" if err else what)
        reason = f"workflow_failed: {what}"
    return child.evolve(state=TaskState.CANCELLED, finished_at=now, updated_at=now,
                        reason=reason, error=error)


def _task_of(sched: ScheduleRecord, task_id: str, seq: int, when: float, now: float) -> TaskRecord:
    return TaskRecord(
        id=task_id,
        task_name=sched.task_name,
        payload=sched.payload,
        priority=sched.priority,
        pool=sched.pool,
        state=TaskState.READY,
        seq=seq,
        created_at=now,
        due_at=when,
        updated_at=now,
        retry=sched.retry,
        timeout=sched.timeout,
        schedule_id=sched.id,
    )


def _refused(o: Outcome, reason: str, detail: str) -> Outcome:
    """The attempt of ``o`` failed for good: its outcome could not be stored."""
    return Outcome(o.task_id, o.token, failure=Failure(
        ErrorInfo("InvalidResultError", detail), retryable=False, reason=reason))


def _valid_text(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _escaped(text: object) -> str:
    """``text`` as valid UTF-8 text (lone surrogates escaped), whatever it was."""
    return str(text).encode("utf-8", "backslashreplace").decode("utf-8")


def _check_id(task_id: object) -> str:
    return check_text(task_id, "task id", MAX_TASK_ID)


def _check_delay(delay: float) -> float:
    value = finite(delay)  # None for bools, text, NaN, infinities and 10**400
    if value is None or value < 0:
        raise InvalidScheduleError(f"delay must be finite seconds >= 0, got {delay!r:.80}")
    return value


def _check_time(when: float) -> float:
    value = finite(when)
    if value is None:
        raise InvalidScheduleError(f"run_at must be finite epoch seconds, got {when!r:.80}")
    return value
