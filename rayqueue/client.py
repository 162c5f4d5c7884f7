"""The client: the typed ``TaskQueue[T]``, one queue's user API (``rayqueue.bootstrap``
makes or finds the queue: ``init``/``connect``).

This is a facade over the queue's actors, in the way Ray's ``util/queue.py`` is: sync
methods with async twins where waiting is involved, batch calls, and every Ray or
asyncio error translated into the rayqueue error tree.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import itertools
import json
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Generic, TypeVar, overload

import ray
from loguru import logger

from rayqueue import codebook, registry
from rayqueue.arguments import MAX_LIMIT, check_int, check_list, check_str, check_timeout
from rayqueue.calls import (
    ANSWER_TIMEOUT_S,
    _aretrying,
    _get,
    _retrying,
    _retrying_all,
)
from rayqueue.config import (
    MAX_POOL_WORKERS,
)
from rayqueue.core.browse import MAX_PAGE, TaskFilter, decode_cursor, encode_cursor, merge_pages
from rayqueue.core.checks import MAX_TASK_ID, check_headers, check_text
from rayqueue.core.lease import Lease, Outcome
from rayqueue.core.priority import PRIORITY_MAX, PRIORITY_MIN
from rayqueue.core.record import NewTask, TaskState, new_task_ids
from rayqueue.core.schedule import (
    CronSpec,
    MisfirePolicy,
    ScheduleSpec,
    delay_to_seconds,
    interval,
    misfire_policy,
    to_epoch,
)
from rayqueue.core.shards import by_head, merge_stats, shard_of, split, unsplit
from rayqueue.core.stats import QueueStats
from rayqueue.errors import (
    InvalidArgumentError,
    InvalidArgumentTypeError,
    InvalidPayloadError,
    InvalidScheduleError,
    PartialEnqueueError,
    PayloadTooLargeError,
    PurgeRefusedError,
    QueueClosedError,
    ResultTimeoutError,
    TaskNotFoundError,
)
from rayqueue.handle import ClaimedTask, GroupHandle, TaskHandle
from rayqueue.info import (
    MetricsSnapshot,
    PoolInfo,
    ScheduleInfo,
    TaskInfo,
    TaskPage,
    WorkerInfo,
)
from rayqueue.middleware import Hooks, Message, Middleware
from rayqueue.protocol import ClaimRequest, pack_news, pack_outcomes, unpack_leases
from rayqueue.sender import Sender, settled
from rayqueue.task import (
    Task,
    decode_payload,
    registered,
    to_new_task,
)
from rayqueue.workflow import Chain, Group, to_news

T = TypeVar("T", bound=Task[Any])
R = TypeVar("R")

#: Longest single wait inside one actor call; longer waits loop, so no call hangs forever.
_WAIT_SLICE_S = 30.0


class TaskQueue(Generic[T]):
    """A queue of tasks of type ``T`` (use ``TaskQueue[Any]`` for mixed types)."""

    def __init__(self, name: str, queue: Any, pool: Any, metrics: Any,
                 journal: str | None = None, retry_timeout: float = 30.0,
                 shards: Sequence[Any] | None = None,
                 middleware: Sequence[Middleware] = ()) -> None:
        self.name = name
        #: the journal's path (None: memory only, or unknown when connected)
        self.journal = journal
        #: how long idempotent calls are retried while the queue actor restarts
        self.retry_timeout = retry_timeout
        self._actor = queue
        #: every shard actor (shard 0 is ``_actor``)
        self._shards = list(shards or [queue])
        self._pool = pool
        self._metrics = metrics
        self._shipped: set[type[Task[Any]]] = set()
        self._client_id = f"client-{uuid.uuid4().hex[:8]}"
        self._claim_turn = 0
        self._max_payload: int | None = None
        #: this client closed the queue: its enqueues are refused here, at once
        self._closed_here = False
        #: this client shut the queue down (its actors are gone)
        self._shut_down = False
        self._sender = Sender(self._send_news, name)
        #: this producer's middleware hooks (before_enqueue, after_enqueue)
        self._hooks = Hooks(middleware)
        # Every task class this process knows goes to the workers' codebook now: after
        # a restart, tasks recovered from the journal find their classes again.
        self._ship(registered().values())

    def __repr__(self) -> str:
        if len(self._shards) > 1:
            return f"TaskQueue({self.name!r}, shards={len(self._shards)})"
        return f"TaskQueue({self.name!r})"

    @property
    def shards(self) -> int:
        """How many queue actors this queue is split over."""
        return len(self._shards)

    def _shard_for(self, task_id: str) -> Any:
        """The queue actor that owns ``task_id``."""
        return self._shards[shard_of(task_id, len(self._shards))]

    def _on_shards(self, ids: Sequence[str], call: Callable[[Any, list[str]], Any],
                   *, retry_full: bool = False, hold: float = 0.0) -> list[Any]:
        """``call(shard, its_ids)`` on each shard owning some of ``ids``, all at once;
        the answers (one per id, as lists) back in the order of ``ids``. ``hold``: how
        long each call may park (see :class:`rayqueue.calls._Budget`)."""
        self._settle()
        if len(self._shards) == 1:  # nothing to split (result waits poll this often)
            answer: list[Any] = _retrying(functools.partial(call, self._actor, list(ids)),
                                          self.retry_timeout, hold=hold,
                                          retry_full=retry_full)
            return answer
        parts = split(list(ids), ids, len(self._shards))
        calls = [functools.partial(call, self._shards[s], [i for _, i in p])
                 for s, p in parts.items()]
        answers = _retrying_all(calls, self.retry_timeout, hold=hold, retry_full=retry_full)
        return unsplit(len(ids), parts.values(), answers)

    def _on_all(self, method: str, *args: Any, waits: float = 0.0) -> list[Any]:
        """An idempotent call on every shard at once; the answers in shard order."""
        self._settle()
        return _retrying_all([functools.partial(getattr(q, method).remote, *args)
                              for q in self._shards], self.retry_timeout, hold=waits)

    # -------------------------------------------------------------- producing
    @overload
    def enqueue(self, task: Chain[R], *, headers: Mapping[str, str] | None = None,
                timeout: float | None = None) -> TaskHandle[R]: ...

    @overload
    def enqueue(self, task: Group[R], *, headers: Mapping[str, str] | None = None,
                timeout: float | None = None) -> GroupHandle[R]: ...

    @overload
    def enqueue(
        self,
        task: Task[R],
        *,
        priority: int | None = None,
        run_at: dt.datetime | None = None,
        delay: float | dt.timedelta | None = None,
        task_id: str | None = None,
        block: bool = False,
        timeout: float | None = None,
        wait: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> TaskHandle[R]: ...

    def enqueue(
        self,
        task: Task[R] | Chain[R] | Group[R],
        *,
        priority: int | None = None,
        run_at: dt.datetime | None = None,
        delay: float | dt.timedelta | None = None,
        task_id: str | None = None,
        block: bool = False,
        timeout: float | None = None,
        wait: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> TaskHandle[R] | GroupHandle[R]:
        """Add one task: validated now, sent in the background; returns its handle at once.

        The way Ray's ``.remote()`` works: the call returns before the task is durable,
        and many calls in a row share actor calls (they are coalesced into batches), so
        a plain ``for t in tasks: queue.enqueue(t)`` loop is not one round trip per task.
        When it returns, the task was validated and has its id, and it is on its way;
        it is *acknowledged* (in the journal, never lost) once ``handle.sent()`` or
        :meth:`flush` returns, or ``handle.result()`` answers. Every later call of this
        client that reads or acts on the queue (``get``, ``stats``, ``cancel``,
        ``pause``, ``join``, ``enqueue_many``, ...) first waits for the enqueues made
        before it, so it sees them. :meth:`close`, :meth:`shutdown` and interpreter
        exit send what is pending. A task the queue refuses (full, closed, a duplicate
        id with another payload) raises from ``handle.sent()``, ``handle.result()`` and
        the next :meth:`flush`.

        Args:
            task: a task instance (its payload is validated here and on the worker).
            priority: overrides the class default; int in [0, 100], higher first.
            run_at: a timezone-aware time to run at.
            delay: seconds (or timedelta) from now, on the queue's clock.
            task_id: your id (default: a new uuid). The enqueue is idempotent on it, so
                it is retried safely while the queue actor restarts.
            block: when the queue is full, wait for room (up to ``timeout`` s) instead
                of raising :class:`QueueFullError` at once.
            timeout: how long ``block`` waits (None: ``retry_timeout``).
            wait: True returns only once the task is in the journal (one round trip,
                shared with concurrent callers), raising any refusal here. With the
                default, tasks still unsent when the process is killed are lost: they
                were never acknowledged.
            headers: string metadata carried with the task to every attempt
                (``current().headers``), journaled and shown in ``TaskInfo.headers``:
                trace context, correlation ids. At most 64 entries and 16 KiB.

        A workflow (:func:`rayqueue.chain`, :func:`rayqueue.group`, a chord) is
        enqueued whole, in one journal write, before this returns; its handle is the
        last step's ``TaskHandle`` (a :class:`GroupHandle` for a group). Only
        ``headers`` (given to every step) and ``timeout`` apply to it.
        """
        check_timeout("timeout", timeout, allow_none=True)
        if isinstance(task, (Chain, Group)):
            if (priority, run_at, delay, task_id) != (None, None, None, None) or block or wait:
                raise InvalidArgumentError(
                    "task", "a workflow takes only headers= and timeout=: its steps use "
                    "their classes' priority, and it is always enqueued before this returns")
            return self._enqueue_flow(task, headers, timeout)
        if block or timeout is not None:
            return self.enqueue_many([task], priority=priority, run_at=run_at, delay=delay,
                                     task_ids=None if task_id is None else [task_id],
                                     block=block, timeout=timeout, headers=headers)[0]
        news, messages = self._new_tasks([task], priority, run_at, delay,
                                         None if task_id is None else [task_id], headers)
        new = news[0]
        if wait:
            try:
                self._sender.send([new])
            except BaseException as err:
                self._after_enqueue(messages, err)
                raise
            self._after_enqueue(messages, None)
            return TaskHandle(self, new.task_id or "", type(task))
        sent = self._sender.submit([new])
        if messages:
            sent.add_done_callback(lambda f: self._after_enqueue(messages, f.exception()))
        return TaskHandle(self, new.task_id or "", type(task), sent=sent)

    def _enqueue_flow(self, flow: Chain[Any] | Group[Any], headers: Mapping[str, str] | None,
                      timeout: float | None) -> TaskHandle[Any] | GroupHandle[Any]:
        """Enqueue every step of ``flow`` in one call (one shard: the step ids share the
        workflow id's shard key) and one journal write; the last step's handle."""
        self._refuse_if_closed()
        given = _checked_headers(headers)
        workflow_id = new_task_ids(1)[0]
        news = to_news(flow, workflow_id, given)
        self._check_sizes(news)
        self._ship({n.task_class for n in flow.nodes})
        self._settle()
        ids = self._send_news(news, timeout=timeout)
        if isinstance(flow, Group):
            return GroupHandle(self, workflow_id, [TaskHandle(self, task_id, n.task_class)
                                                   for task_id, n in zip(ids, flow.nodes,
                                                                         strict=True)])
        return TaskHandle(self, ids[-1], flow.nodes[-1].task_class)

    async def enqueue_async(
        self,
        task: Task[R],
        *,
        priority: int | None = None,
        run_at: dt.datetime | None = None,
        delay: float | dt.timedelta | None = None,
        task_id: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> TaskHandle[R]:
        """:meth:`enqueue` for coroutines: concurrent callers share batched calls."""
        news, messages = self._new_tasks([task], priority, run_at, delay,
                                         None if task_id is None else [task_id], headers)
        new = news[0]
        sent = self._sender.submit([new])
        if messages:
            sent.add_done_callback(lambda f: self._after_enqueue(messages, f.exception()))
        await settled(sent)
        return TaskHandle(self, new.task_id or "", type(task), sent=sent)

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every task enqueued with ``wait=False`` is durable.

        Raises:
            ResultTimeoutError: some were still unsent after ``timeout`` s.
            RayQueueError: the first of the enqueues that failed since the last flush
                (a warning counts them; each handle's ``sent()`` raises its own).
        """
        check_timeout("timeout", timeout, allow_none=True)
        if not self._sender.flush(timeout):
            raise ResultTimeoutError(f"<{self._sender.pending} unsent enqueue(s)>",
                                     timeout or 0.0)
        errors = self._sender.take_errors()
        if errors:
            if len(errors) > 1:
                logger.warning("{} enqueues failed since the last flush; raising the first "
                               "(each handle's sent() raises its own)", len(errors),
                               action="enqueue_failed", errors=len(errors))
            raise errors[0]

    def _refuse_if_closed(self) -> None:
        if self._shut_down:
            raise QueueClosedError(f"queue {self.name!r} was shut down by this client: "
                                   "rayqueue.init it again to enqueue")
        if self._closed_here:
            raise QueueClosedError("the queue is closed: no new tasks are accepted")

    def _new_tasks(self, tasks: Sequence[Task[Any]], priority: int | None,
                   run_at: dt.datetime | None, delay: float | dt.timedelta | None,
                   task_ids: Sequence[str] | None, headers: Mapping[str, str] | None = None,
                   ) -> tuple[list[NewTask], list[Message]]:
        """Validated NewTasks with their ids assigned here (so retries are idempotent),
        their sizes checked and their classes shipped; with the middleware's messages
        (empty when no middleware has enqueue hooks)."""
        self._refuse_if_closed()
        if task_ids is not None:  # (each id is checked with its task)
            task_ids = check_list("task_ids", task_ids, object, "task id")
            if len(task_ids) != len(tasks):
                raise InvalidArgumentError(
                    "task_ids", f"{len(task_ids)} task ids for {len(tasks)} tasks: give one "
                    "id per task, in order")
        if run_at is not None and delay is not None:
            raise InvalidScheduleError("give run_at or delay, not both")
        at = None if run_at is None else to_epoch(run_at)
        after = None if delay is None else delay_to_seconds(delay)
        ids = list(task_ids) if task_ids is not None else new_task_ids(len(tasks))
        given = _checked_headers(headers)
        messages: list[Message] = []
        hooks = self._hooks
        if hooks.enqueues:
            for t, i in zip(tasks, ids, strict=True):
                cls = type(t)
                message = Message(str(i), getattr(cls, "task_name", cls.__name__),
                                  getattr(cls, "priority", 0) if priority is None else priority,
                                  dict(given or {}), t)
                hooks.call("before_enqueue", message)
                messages.append(message)
            news = [to_new_task(t, priority=priority, run_at=at, delay=after, task_id=i,
                                headers=m.headers)
                    for t, i, m in zip(tasks, ids, messages, strict=True)]
        else:
            news = [to_new_task(t, priority=priority, run_at=at, delay=after, task_id=i,
                                headers=given)
                    for t, i in zip(tasks, ids, strict=True)]
        self._check_sizes(news)
        self._ship({type(t) for t in tasks})
        return news, messages

    def _after_enqueue(self, messages: list[Message], error: BaseException | None) -> None:
        """Middleware's ``after_enqueue`` for each message of an enqueue that ended."""
        for message in messages:
            self._hooks.call("after_enqueue", message, error)

    def enqueue_many(
        self,
        tasks: Iterable[Task[R]],
        *,
        priority: int | None = None,
        run_at: dt.datetime | None = None,
        delay: float | dt.timedelta | None = None,
        task_ids: Sequence[str] | None = None,
        block: bool = False,
        timeout: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> list[TaskHandle[R]]:
        """Add many tasks in one call and one journal write; all or nothing.

        Every task gets an id here (yours or a new uuid) before anything is sent, so a
        call retried after an ambiguous failure (the queue actor died between commit and
        reply) creates each task once.
        """
        if isinstance(tasks, Task):  # (a pydantic model is iterable: its fields)
            raise InvalidArgumentTypeError(
                "tasks", "got one Task: pass a list of tasks, or use enqueue() for one")
        tasks = check_list("tasks", tasks, object, "Task")  # (each is checked as a Task)
        check_timeout("timeout", timeout, allow_none=True)
        news, messages = self._new_tasks(tasks, priority, run_at, delay, task_ids, headers)
        self._settle()  # after the single enqueues made before it, as they were made
        try:
            done = self._send_news(news, retry_full=block, timeout=timeout)
        except BaseException as err:
            self._after_enqueue(messages, err)
            raise
        self._after_enqueue(messages, None)
        return [TaskHandle(self, task_id, type(t)) for task_id, t in zip(done, tasks, strict=True)]

    def _send_news(self, news: list[NewTask], *, retry_full: bool = False,
                   timeout: float | None = None) -> list[str]:
        """Send tasks to their shards (one call each, at once); their ids, in order.

        All or nothing within a shard. Across shards a failure can leave some shards'
        part enqueued: the ids were fixed before sending, so a retry of the same call
        creates each task once."""
        if len(self._shards) == 1:
            blob = pack_news(news)
            ids: list[str] = self._retrying(lambda: self._actor.enqueue_many.remote(blob),
                                            retry_full=retry_full, timeout=timeout)
            return ids
        parts = split(news, [n.task_id or "" for n in news], len(self._shards))
        answers = _retrying_all(
            [functools.partial(_enqueue_part, self._shards[s], [n for _, n in p])
             for s, p in parts.items()],
            self.retry_timeout if timeout is None else timeout, retry_full=retry_full,
            settle=True)
        errors = [a for a in answers if isinstance(a, BaseException)]
        if errors:
            done = [i for a in answers if not isinstance(a, BaseException) for i in a]
            if not done:
                raise errors[0]
            failed = [n.task_id or "" for p, a in zip(parts.values(), answers, strict=True)
                      if isinstance(a, BaseException) for _, n in p]
            raise PartialEnqueueError(done, failed, errors[0]) from errors[0]
        return unsplit(len(news), parts.values(), answers)

    def _settle(self) -> None:
        """Wait until the enqueues this client made so far are answered, so that what
        follows sees them (read your writes). Later enqueues from other threads do not
        hold it up. Failures stay with their handles and the next flush()."""
        if self._sender.pending:
            self._sender.settle(self.retry_timeout)

    def _read(self, method: str, *args: Any) -> Any:
        """Call an idempotent queue-actor method, retrying while the actor restarts."""
        return self._retrying(lambda: getattr(self._actor, method).remote(*args))

    def _retrying(self, call: Callable[[], Any], *, retry_full: bool = False,
                  timeout: float | None = None) -> Any:
        """Run an idempotent call, retrying while the queue is unreachable or busy
        (and, with ``retry_full``, full) for up to ``timeout`` (or retry_timeout) s."""
        return _retrying(call, self.retry_timeout if timeout is None else timeout,
                         retry_full=retry_full)

    def _check_sizes(self, news: Sequence[NewTask]) -> None:
        """Refuse oversized payloads here, before anything is sent."""
        if self._max_payload is None:
            self._max_payload = int(self._read("max_payload_bytes"))
        limit = self._max_payload
        for new in news:
            if len(new.payload) * 4 > limit and len(new.payload.encode()) > limit:
                raise PayloadTooLargeError(new.task_name, len(new.payload.encode()), limit)

    def enqueue_payload(
        self,
        task_name: str,
        payload: str | dict[str, Any],
        **options: Any,
    ) -> TaskHandle[Any]:
        """Enqueue by task name and JSON payload (for CLIs and other languages' glue).

        The payload is validated against the registered class now, with the field
        paths of any error (:class:`InvalidPayloadError`), and again on the worker.
        """
        check_str("task_name", task_name)
        if isinstance(payload, str):
            text = payload
        elif isinstance(payload, dict):
            try:
                text = json.dumps(payload, allow_nan=False)
            except (TypeError, ValueError, RecursionError) as err:
                raise InvalidPayloadError(task_name, f"not JSON: {err}") from None
        else:
            raise InvalidArgumentTypeError(
                "payload", f"expected JSON text or a dict, got {type(payload).__name__}")
        task = decode_payload(task_name, text)
        return self.enqueue(task, **options)

    def _ship(self, classes: Iterable[type[Task[Any]]]) -> None:
        fresh = set(classes) - self._shipped
        if fresh:
            codebook.ship(self.name, fresh)
            self._shipped |= fresh

    def schedule(
        self,
        task: Task[Any],
        *,
        every: float | dt.timedelta | None = None,
        cron: str | None = None,
        tz: str = "UTC",
        schedule_id: str | None = None,
        priority: int | None = None,
        misfire: MisfirePolicy | str = MisfirePolicy.RUN_ONCE,
    ) -> str:
        """Run ``task`` periodically: ``every`` seconds, or by ``cron`` in time zone ``tz``.

        Returns the schedule id (stop it with :meth:`cancel`). Creating the same id
        again with the same task is a no-op.
        """
        spec: ScheduleSpec
        if (every is None) == (cron is None):
            raise InvalidScheduleError("give exactly one of every= or cron=")
        spec = interval(every) if every is not None else CronSpec(str(cron), tz)
        policy = misfire_policy(misfire)
        if schedule_id is not None:
            check_text(schedule_id, "schedule id", MAX_TASK_ID)
        self._refuse_if_closed()
        self._settle()
        new = to_new_task(task, priority=priority)
        self._ship({type(task)})
        sid = schedule_id or f"schedule-{uuid.uuid4().hex[:12]}"
        _get(self._shard_for(sid).add_schedule.remote(
            schedule_id=sid, task_name=new.task_name, payload=new.payload, spec=spec,
            priority=new.priority, pool=new.pool, misfire=policy,
            retry=new.retry, timeout=new.timeout))
        return sid

    # -------------------------------------------------------------- consuming
    def dequeue(self, timeout: float = 0.0, pool: str = "default") -> ClaimedTask[T] | None:
        """Claim the next task for this caller under a lease (None if none came).

        The caller must ``ack``, ``fail`` or ``release`` it before the lease expires.
        ``timeout``: seconds to wait for one, at most a year (not None).
        """
        timeout = check_timeout("timeout", timeout) or 0.0
        check_str("pool", pool)
        self._settle()
        leases = self._claim_one(pool, timeout)
        if not leases:
            return None
        lease = leases[0]
        task: T = decode_payload(lease.task_name, lease.payload,  # type: ignore[assignment]
                                 feed=lease.feed)
        return ClaimedTask(lease, task, self._report, self._release)

    def _claim_one(self, pool: str, timeout: float) -> list[Lease]:
        """One lease for this client (within ``timeout`` s). Over shards: first from
        the shards in the order of their best tasks (rank, then due time, as one queue
        would hand them out; equal ones in turn); if none had any, short waits on each
        in turn."""
        n = len(self._shards)
        if n == 1:
            return self._claim_on(self._actor, pool, timeout)
        end = time.monotonic() + timeout
        for s in by_head(self._on_all("head_rank", pool), self._claim_turn):
            if leases := self._claim_on(self._shards[s], pool, 0.0):
                self._claim_turn = (s + 1) % n
                return leases
        for turn in itertools.count():
            shard = self._shards[(self._claim_turn + turn) % n]
            leases = self._claim_on(shard, pool, min(max(0.0, end - time.monotonic()), 0.1))
            if leases or time.monotonic() >= end:
                self._claim_turn = (self._claim_turn + turn + 1) % n
                return leases
        raise AssertionError("unreachable")

    def _claim_on(self, shard: Any, pool: str, wait: float) -> list[Lease]:
        # The claim parks up to ``wait`` s; a request or reply that Ray lost must not
        # hang dequeue for good, so beyond that (and ANSWER_TIMEOUT_S) it is a
        # QueueUnavailableError. A lease granted by a claim whose reply was lost is
        # not run: it expires after the queue's lease_ttl and its task goes back.
        reply = _get(shard.claim.remote(ClaimRequest(self._client_id, pool, 1, wait)),
                     timeout=wait + ANSWER_TIMEOUT_S)
        return unpack_leases(reply.leases)

    def _report(self, outcome: Outcome) -> bool:
        shard = self._shard_for(outcome.task_id)
        return bool(_get(shard.report.remote(self._client_id, pack_outcomes([outcome])))[0])

    def _release(self, task_id: str, token: int) -> bool:
        shard = self._shard_for(task_id)
        return bool(_get(shard.release.remote([(task_id, token)]))[0])

    # ------------------------------------------------------------------ reads
    def peek(self, pool: str = "default") -> TaskInfo | None:
        """The task a worker of ``pool`` would get next, without taking it."""
        check_str("pool", pool)
        self._settle()
        shards = [self._actor] if len(self._shards) == 1 else [
            self._shards[s] for s in by_head(self._on_all("head_rank", pool))]
        for shard in shards:  # (the best one's head may be taken meanwhile)
            head: TaskInfo | None = self._retrying(functools.partial(shard.peek.remote, pool))
            if head is not None:
                return head
        return None

    def get(self, task_id: str) -> TaskInfo:
        """A task's record. Raises :class:`TaskNotFoundError`."""
        check_str("task_id", task_id)
        self._settle()
        info: TaskInfo | None = self._retrying(lambda: self._shard_for(task_id).get.remote(
            task_id))
        if info is None:
            if any(s.id == task_id for s in self.schedules()):
                raise TaskNotFoundError(task_id, f"{task_id!r} is a schedule, not a task: "
                                        "see queue.schedules() (its runs are tasks with ids "
                                        f"'{task_id}@<ms>')")
            raise TaskNotFoundError(task_id)
        return info

    def get_many(self, task_ids: Sequence[str]) -> list[TaskInfo | None]:
        """Many tasks' records in one call (None where a task is unknown)."""
        return self._wait_round(check_list("task_ids", task_ids, str, "task id str"), 0.0)

    def handle(self, task_id: str, task_cls: type[Task[R]] | None = None) -> TaskHandle[R]:
        """A handle on an existing task (e.g. one enqueued by another driver)."""
        check_str("task_id", task_id)
        if task_cls is not None and not (isinstance(task_cls, type)
                                         and issubclass(task_cls, Task)):
            raise InvalidArgumentTypeError(
                "task_cls", f"expected a Task subclass or None, got {task_cls!r}")
        return TaskHandle(self, task_id, task_cls)

    def stats(self) -> QueueStats:
        """Counts by state and by pool and priority."""
        return merge_stats(self._on_all("stats"))

    def size(self) -> int:
        """Unfinished tasks."""
        return self.stats().size

    def cancel(self, task_id: str, force: bool = False) -> str:
        """Cancel a task, or stop a schedule; returns the new state (``cancelled``, or
        ``removed`` for a schedule).

        A task that has not started never runs. A running one ends ``cancelled`` at once
        (never retried; its worker's outcome is dropped) and its worker learns of it
        within about a quarter of a second: an async task is cancelled on the worker's
        event loop, a sync task sees ``rayqueue.task.current().cancelled`` and should
        return. With ``force=True`` the worker running it is killed and replaced, as for
        a timeout (its other tasks count a lost attempt): for a sync task that does not
        look at the flag.

        Raises:
            TaskNotFoundError: no such task or schedule.
            InvalidStateError: the task already succeeded or is dead.
        """
        check_str("task_id", task_id)
        if not isinstance(force, bool):
            raise InvalidArgumentTypeError("force", f"a bool, got {type(force).__name__}")
        self._settle()
        state: str = _get(self._shard_for(task_id).cancel.remote(task_id, force))
        return state

    def schedules(self) -> list[ScheduleInfo]:
        """Every periodic schedule (over all shards): id, task type, trigger, next and
        last run, runs so far, and why it is paused, if it is (for example, a schedule
        whose task type no worker knows is paused rather than failing a run each
        period; :meth:`resume_schedule` starts it again)."""
        return sorted((s for part in self._on_all("schedules") for s in part),
                      key=lambda s: s.id)

    def resume_schedule(self, schedule_id: str) -> ScheduleInfo:
        """Let a paused schedule create runs again, from its next fire time."""
        check_text(schedule_id, "schedule id", MAX_TASK_ID)
        self._settle()
        info: ScheduleInfo = self._retrying(functools.partial(
            self._shard_for(schedule_id).resume_schedule.remote, schedule_id))
        return info

    def dead_letters(self, limit: int = 100) -> list[TaskInfo]:
        """Dead tasks with their reasons and last errors, most recent first (at most
        ``limit``, an int from 0 to 1,000,000)."""
        check_int("limit", limit, 0, MAX_LIMIT)
        dead: list[TaskInfo] = [i for part in self._on_all("dead_letters", limit) for i in part]
        dead.sort(key=lambda i: i.finished_at or 0.0, reverse=True)
        return dead[:limit]

    def tasks(self, *, state: str | Sequence[str] | None = None, type: str | None = None,
              priority: int | None = None, id_prefix: str | None = None, limit: int = 50,
              after: str | None = None) -> TaskPage:
        """A page of tasks, newest first, that match every filter given: ``state``
        (one state or several: ``scheduled``, ``ready``, ``leased``, ``failed``,
        ``succeeded``, ``dead``, ``cancelled``), ``type`` (a task name), ``priority``
        and ``id_prefix`` (a whole id finds its task at once). Pass the page's ``next``
        as ``after`` for the page after it.

        Served from each queue actor's memory with bounded work (rows without payload,
        result or traceback: ``get(id)`` has them); a page may hold fewer than ``limit``
        rows (even none) while ``next`` is set, when its filter matches few of the
        tasks it examined. ``limit``: 1 to 500.

        Raises:
            InvalidArgumentError: an unknown state, a limit out of range, or an
                ``after`` that is not a cursor of this queue.
        """
        where = _task_filter(state, type, priority, id_prefix)
        check_int("limit", limit, 1, MAX_PAGE)
        if after is not None:
            check_str("after", after)
        try:
            cursors = decode_cursor(after, len(self._shards))
        except ValueError as err:
            raise InvalidArgumentError("after", str(err)) from None
        self._settle()
        asked = [s for s, c in enumerate(cursors) if c != 0]
        answers = _retrying_all([functools.partial(self._shards[s].browse.remote, where, limit,
                                                   cursors[s]) for s in asked],
                                self.retry_timeout)
        pages: list[tuple[list[tuple[int, TaskInfo]], int | None]] = [([], 0)] * len(cursors)
        for s, answer in zip(asked, answers, strict=True):
            pages[s] = answer
        rows, places = merge_pages(pages, cursors, limit,
                                   key=lambda t: (t.created_at, t.id))
        return TaskPage(tasks=rows, next=encode_cursor(places))

    def purge(self, state: str | Sequence[str] = ("succeeded", "dead", "cancelled")) -> int:
        """Remove finished tasks in ``state`` (``succeeded``, ``dead``, ``cancelled``,
        or several; by default all three) from the queue and its journal, so a restart
        does not bring them back; returns how many were removed.

        Raises:
            PurgeRefusedError: a state of unfinished tasks (ready, scheduled, leased,
                failed): cancel them first.
            InvalidArgumentError: an unknown state.
        """
        states = _states(state)
        if not states:
            raise InvalidArgumentError("state", "name at least one state to purge")
        unfinished = sorted(s.value for s in states if not s.terminal)
        if unfinished:
            raise PurgeRefusedError(unfinished)
        self._settle()
        return sum(self._on_all("purge", sorted(s.value for s in states)))

    def retry_dead(self, task_id: str) -> TaskInfo:
        """Put a dead task back in the queue with fresh attempts."""
        check_str("task_id", task_id)
        self._settle()
        info: TaskInfo = _get(self._shard_for(task_id).retry_dead.remote(task_id))
        return info

    def metrics(self) -> MetricsSnapshot:
        """The metrics actor's aggregate: counts, rates, histograms, workers."""
        snap: MetricsSnapshot = self._retrying(lambda: self._metrics.snapshot.remote(self.name))
        return snap

    def pools(self) -> list[PoolInfo]:
        """Each pool's size, bounds and demand."""
        pools: list[PoolInfo] = self._retrying(lambda: self._pool.pools.remote())
        return pools

    def resize_pool(self, pool: str, min_workers: int, max_workers: int) -> PoolInfo:
        """Change a pool's worker bounds (applied within a scaling cycle, ~0.25 s).

        Raises:
            InvalidArgumentError: no such pool, or invalid bounds (a ValueError).
        """
        check_str("pool", pool)
        check_int("min_workers", min_workers, 0, MAX_POOL_WORKERS)
        check_int("max_workers", max_workers, 1, MAX_POOL_WORKERS)
        if min_workers > max_workers:
            raise InvalidArgumentError("min_workers",
                                       f"{min_workers} is above max_workers={max_workers}")
        try:
            info: PoolInfo = _get(self._pool.resize.remote(pool, min_workers, max_workers))
        except ValueError as err:  # the pool actor's "no such pool"
            if isinstance(err, InvalidArgumentError):
                raise
            raise InvalidArgumentError("pool", str(err)) from err
        return info

    def workers(self) -> list[WorkerInfo]:
        """Every worker actor with its pool, node and state."""
        workers: list[WorkerInfo] = self._retrying(lambda: self._pool.workers.remote())
        return workers

    # ---------------------------------------------------------------- waiting
    def _wait_round(self, ids: Sequence[str], left: float) -> list[TaskInfo | None]:
        """Each shard waits up to ``left`` s for its part of ``ids`` (all at once)."""
        return self._on_shards(ids, lambda q, part: q.wait_results.remote(part, left),
                               hold=left)

    def _wait(self, ids: Sequence[str], timeout: float | None, slice_s: float = 0.0,
              on_round: Callable[[int], None] | None = None) -> list[TaskInfo | None]:
        """Wait for ``ids`` in slices of ``slice_s`` s (default ``_WAIT_SLICE_S``);
        ``on_round`` is told how many are finished after each slice."""
        slice_s = slice_s or _WAIT_SLICE_S
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            left = slice_s if end is None else max(0.0, min(slice_s, end - time.monotonic()))
            infos = self._wait_round(ids, left)
            done = sum(1 for i in infos if i is None or i.terminal)
            if on_round is not None:
                on_round(done)
            if done == len(infos) or (end is not None and time.monotonic() >= end):
                return infos

    async def _wait_async(self, ids: Sequence[str],
                          timeout: float | None) -> list[TaskInfo | None]:
        loop = asyncio.get_running_loop()
        end = None if timeout is None else loop.time() + timeout
        while True:
            left = _WAIT_SLICE_S if end is None else max(0.0, min(_WAIT_SLICE_S,
                                                                  end - loop.time()))
            parts = split(list(ids), ids, len(self._shards))
            answers = await asyncio.gather(*(_aretrying(functools.partial(
                self._shards[s].wait_results.remote, [i for _, i in p], left),
                self.retry_timeout, hold=left) for s, p in parts.items()))
            infos: list[TaskInfo | None] = unsplit(len(ids), parts.values(), answers)
            if all(i is None or i.terminal for i in infos) or (
                end is not None and loop.time() >= end
            ):
                return infos

    def wait(self, task_ids: Sequence[str], timeout: float | None = None,
             ) -> list[TaskInfo | None]:
        """Wait until every task of ``task_ids`` has finished (or ``timeout`` s passed);
        their records, in order (None for an unknown id). Never raises for a task that
        failed: read ``state``, ``error_type`` and ``result_json`` (see :meth:`results`
        for typed results). One call per shard per slice, whatever the number of tasks."""
        ids = check_list("task_ids", task_ids, str, "task id")
        check_timeout("timeout", timeout, allow_none=True)
        return self._wait(ids, timeout)

    async def wait_async(self, task_ids: Sequence[str], timeout: float | None = None,
                         ) -> list[TaskInfo | None]:
        """:meth:`wait` without blocking the event loop."""
        ids = check_list("task_ids", task_ids, str, "task id")
        check_timeout("timeout", timeout, allow_none=True)
        return await self._wait_async(ids, timeout)

    def results(self, handles: Sequence[TaskHandle[R]], timeout: float | None = None) -> list[R]:
        """Wait for many results with one call per slice (not one per task)."""
        handles = check_list("handles", handles, TaskHandle, "TaskHandle")
        check_timeout("timeout", timeout, allow_none=True)
        for handle in handles:
            handle.sent(timeout)
        infos = self._wait([h.id for h in handles], timeout)
        return [h.value_of(i, timeout) for h, i in zip(handles, infos, strict=True)]

    def wait_all(self, handles: Sequence[TaskHandle[R]], timeout: float | None = None,
                 progress: bool = True, description: str = "tasks") -> list[R]:
        """Wait for every result, showing a progress bar (terminal or notebook).

        One call per half second, whatever the number of tasks; results come back typed
        and in order. Raises like :meth:`results` once all are finished (or on timeout).
        """
        handles = check_list("handles", handles, TaskHandle, "TaskHandle")
        check_timeout("timeout", timeout, allow_none=True)
        ids = [h.id for h in handles]
        for handle in handles:
            handle.sent(timeout)
        bar = _Progress(len(ids), description) if progress else None
        try:
            infos = self._wait(ids, timeout, 0.5, None if bar is None else bar.update)
        finally:
            if bar is not None:
                bar.close()
        return [h.value_of(i, timeout) for h, i in zip(handles, infos, strict=True)]

    def join(self, timeout: float = 60.0) -> None:
        """Wait until no unfinished task is left (scheduled and retrying ones count).

        Raises:
            ResultTimeoutError: tasks were still unfinished after ``timeout`` seconds.
        """
        check_timeout("timeout", timeout)
        end = time.monotonic() + timeout
        while True:
            left = min(_WAIT_SLICE_S, max(0.0, end - time.monotonic()))
            if all(self._on_all("join", left, waits=left)) and self._quiet():
                return
            if time.monotonic() >= end:
                raise ResultTimeoutError(f"<queue {self.name}>", timeout)

    def _quiet(self) -> bool:
        """Whether every shard was empty at one same instant. Shards answer one by one:
        a task of one shard may enqueue into another that already said "empty". Two
        rounds in which every shard is empty and has created nothing in between prove
        an instant (the end of the first round) when all were."""
        if len(self._shards) == 1:
            return True
        first = self._on_all("quiet_mark")
        return all(n == 0 for n, _ in first) and self._on_all("quiet_mark") == first

    # -------------------------------------------------------------- lifecycle
    def close(self, drain_timeout: float | None = None) -> None:
        """Refuse further enqueues at once (:class:`QueueClosedError`).

        With ``drain_timeout``, also stop the workers: they finish what they can within
        that many seconds and release the rest back to the queue without counting a
        failure (it runs when the queue is opened again).
        """
        check_timeout("drain_timeout", drain_timeout, allow_none=True)
        self._on_all("close")
        self._closed_here = True
        if drain_timeout is not None:
            _retrying(lambda: self._pool.shutdown.remote(drain_timeout), self.retry_timeout,
                      hold=drain_timeout)

    def pause(self) -> None:
        """Stop handing tasks to workers; enqueues go on and running tasks finish.

        Kept in the queue actor's memory: a restarted queue actor runs again.
        """
        self._on_all("pause")

    def resume(self) -> None:
        """Hand tasks to workers again."""
        self._on_all("resume")

    def shutdown(self, timeout: float = 10.0) -> None:
        """Drain the workers, then remove this queue's actors from the cluster.

        Later enqueues on this client raise :class:`QueueClosedError`.
        """
        check_timeout("timeout", timeout)
        self._shut_down = True
        if getattr(self, "_removed", False):
            return  # this client removed the actors already: nothing left to stop
        self._sender.close(timeout)
        # An actor that is gone (killed, its node lost) is waited for up to ``timeout``,
        # not the client's whole retry budget: its handle is killed below either way.
        budget = min(self.retry_timeout, timeout)
        try:
            _retrying(lambda: self._pool.shutdown.remote(timeout), budget, hold=timeout)
            # Commit what is buffered and fold each journal's log into its file: a
            # cleanly shut-down journal is one file, and its side file says it was closed.
            _retrying_all([functools.partial(s.stop.remote) for s in self._shards],
                          budget, settle=True)
        finally:
            for handle in (self._pool, *self._shards):
                ray.kill(handle)
            # The metrics actor is the cluster's, shared: it only forgets this queue.
            self._metrics.forget.remote(self.name)
            self._removed = True
            registry.unregister(self.name)


def _states(state: object) -> frozenset[TaskState]:
    """``state`` (one state name or several) as task states."""
    names = [state] if isinstance(state, str) else state
    if not isinstance(names, Sequence | frozenset | set) or not all(
            isinstance(n, str) for n in names):
        raise InvalidArgumentTypeError("state", f"a state name or a list of them, got "
                                       f"{type(state).__name__}")
    known = {s.value: s for s in TaskState}
    for n in names:
        if n not in known:
            raise InvalidArgumentError("state", f"no state {n!r}: one of {', '.join(known)}")
    return frozenset(known[n] for n in names)


def _task_filter(state: object, task_name: object, priority: object,
                 id_prefix: object) -> TaskFilter:
    """A listing's filter, each part checked."""
    states = None if state is None else _states(state)
    if task_name is not None:
        check_str("type", task_name)
    if priority is not None:
        check_int("priority", priority, PRIORITY_MIN, PRIORITY_MAX)
    if id_prefix is not None:
        check_str("id_prefix", id_prefix)
    return TaskFilter(states=states or None,
                      task_name=task_name if isinstance(task_name, str) else None,
                      priority=priority if isinstance(priority, int) else None,
                      id_prefix=id_prefix if isinstance(id_prefix, str) else None)


def _checked_headers(headers: Mapping[str, str] | None) -> dict[str, str] | None:
    """Headers given to an enqueue, checked (a copy; None stays None)."""
    return None if headers is None else check_headers(
        dict(headers) if isinstance(headers, Mapping) else headers)


def _enqueue_part(shard: Any, news: list[NewTask]) -> Any:
    return shard.enqueue_many.remote(pack_news(news))


class _Progress:
    """A rich progress bar (it renders in terminals and in Jupyter)."""

    def __init__(self, total: int, description: str) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        self._progress = Progress("[progress.description]{task.description}", BarColumn(),
                                  MofNCompleteColumn(), TimeElapsedColumn())
        self._task = self._progress.add_task(description, total=total)
        self._progress.start()

    def update(self, done: int) -> None:
        self._progress.update(self._task, completed=done)

    def close(self) -> None:
        self._progress.stop()
