"""Coalescing enqueue: many single enqueues ride in one actor call.

One actor call costs about a millisecond here, so one call per task caps a producer near
1,000 tasks/s. The sender keeps a FIFO of submissions and one background thread that
sends everything waiting as one ``enqueue_many`` while the previous call is in flight:
an idle producer's task leaves at once, and under load batches grow by themselves (the
way a database groups commits). Concurrent callers, threads or coroutines, share the
calls; a caller who does not wait gets its handle back at once and learns of the result
with ``flush()`` (as Kafka's producer ``send``/``flush``).

Each submission succeeds or fails as a whole, on its own: when a batch of several is
refused for something one of them did (a duplicate id, say), each is sent again alone,
so one caller's bad task never fails another caller's.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import threading
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future

from loguru import logger

from rayqueue.core.record import NewTask
from rayqueue.errors import (
    PartialEnqueueError,
    QueueBusyError,
    QueueClosedError,
    QueueFullError,
    QueueUnavailableError,
    StorageError,
)
from rayqueue.logging import traceback_of

#: Most tasks one coalesced call carries.
MAX_BATCH = 5_000
#: Errors about the queue as a whole: every submission in the batch gets them as they are.
_SHARED_ERRORS = (QueueUnavailableError, QueueBusyError, StorageError)

Send = Callable[[list[NewTask]], list[str]]
Batch = list[tuple[list[NewTask], Future[list[str]]]]


class Sender:
    """A FIFO of enqueue submissions and the thread that sends them in batches."""

    def __init__(self, send: Send, name: str = "queue", max_batch: int = MAX_BATCH) -> None:
        self._send = send
        self._max_batch = max_batch
        self._name = name
        self._pending: deque[tuple[list[NewTask], Future[list[str]]]] = deque()
        self._cond = threading.Condition()
        self._inflight = 0
        #: submissions so far, and how many of them (oldest first) have been answered
        self._submitted = 0
        self._answered = 0
        #: a call is in flight (by the thread or by a caller of send())
        self._sending = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self._errors: list[BaseException] = []
        _LIVE.add(self)

    def submit(self, news: Sequence[NewTask], *, start: bool = True) -> Future[list[str]]:
        """Queue ``news`` for sending; the future gives their ids once they are durable."""
        fut: Future[list[str]] = Future()
        with self._cond:
            if self._closed:
                raise QueueClosedError(f"the client of queue {self._name!r} was shut down: "
                                       "no more enqueues are sent")
            self._pending.append((list(news), fut))
            self._inflight += 1
            self._submitted += 1
            if start and self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name=f"rayqueue-sender-{self._name}")
                self._thread.start()
            self._cond.notify_all()
        return fut

    def send(self, news: Sequence[NewTask]) -> list[str]:
        """Submit ``news`` and wait for their ids.

        When no call is in flight the caller sends the batch itself (its own tasks and
        whatever else waits), saving two thread hand-offs; otherwise it waits for the
        call that carries its tasks, as :meth:`submit` callers do.
        """
        fut = self.submit(news, start=False)
        while True:
            with self._cond:
                if fut.done():
                    break
                batch = None if self._sending else self._take_now()
                if batch is None:
                    self._cond.wait_for(lambda: fut.done() or not self._sending)
                    continue
            self._deliver_and_count(batch)
        return fut.result()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every submission so far is answered; False if ``timeout`` passed."""
        with self._cond:
            return self._cond.wait_for(lambda: self._inflight == 0, timeout)

    def settle(self, timeout: float | None = None) -> bool:
        """Wait until every submission made before this call is answered (later ones
        may still be on their way); False if ``timeout`` passed first. Submissions are
        answered oldest first, so this is a watermark, not a wait for silence."""
        with self._cond:
            target = self._submitted
            return self._cond.wait_for(lambda: self._answered >= target, timeout)

    def take_errors(self) -> list[BaseException]:
        """The errors of submissions that failed since the last call (then forgotten)."""
        with self._cond:
            errors, self._errors = self._errors, []
            return errors

    @property
    def pending(self) -> int:
        """Submissions not answered yet."""
        with self._cond:
            return self._inflight

    def close(self, timeout: float | None = 10.0) -> None:
        """Send what is waiting (up to ``timeout`` s), then stop the thread."""
        self.flush(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _take_now(self) -> Batch | None:
        """With the lock held: claim the right to send, and the next batch (None if
        nothing waits). The caller must then call :meth:`_deliver_and_count`."""
        if not self._pending:
            return None
        self._sending = True
        batch = [self._pending.popleft()]
        size = len(batch[0][0])
        while self._pending and size + len(self._pending[0][0]) <= self._max_batch:
            item = self._pending.popleft()
            size += len(item[0])
            batch.append(item)
        # From here on a future cannot be cancelled; one cancelled before (by a caller's
        # own fut.cancel(): awaiting through settled() never cancels it) is still sent:
        # the task may well be wanted, and it is harmless.
        for _, fut in batch:
            fut.set_running_or_notify_cancel()
        return batch

    def _deliver_and_count(self, batch: Batch) -> None:
        try:
            self._deliver(batch)
        finally:
            with self._cond:
                self._sending = False
                self._inflight -= len(batch)
                self._answered += len(batch)
                self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: (self._pending and not self._sending)
                                    or (self._closed and not self._pending))
                if not self._pending:
                    return  # closed, and everything was sent
                batch = self._take_now()
            if batch is not None:
                try:
                    self._deliver_and_count(batch)
                except Exception as err:  # the thread must outlive any one batch
                    logger.error("enqueue sender: {}\n{}", err, traceback_of(err),
                                 action="enqueue_sender_failed")
                # not kept while the thread waits: its futures' waiters (and their
                # event loops) are the callers' to keep
                batch = None

    def _deliver(self, batch: Batch) -> None:
        try:
            ids = self._send([new for news, _ in batch for new in news])
        except PartialEnqueueError as err:
            # A sharded queue: settle each submission by its own ids.
            done = set(err.enqueued)
            rest = []
            for news, fut in batch:
                if all(n.task_id in done for n in news):
                    if not fut.done():
                        fut.set_result([n.task_id or "" for n in news])
                else:
                    rest.append((news, fut))
            if isinstance(err.cause, _SHARED_ERRORS) or len(rest) == 1:
                for _, fut in rest:
                    self._fail(fut, err.cause)
            else:
                for item in rest:
                    self._deliver([item])
            return
        except _SHARED_ERRORS as err:
            for _, fut in batch:
                self._fail(fut, err)
            return
        except Exception as err:
            if len(batch) == 1:
                self._fail(batch[0][1], err)
                return
            # Something in the batch was refused: find whose, by sending each alone. Once
            # the queue answers full, the rest are refused as full without a call each
            # (a batch of 2,000 pipelined enqueues into a full queue took 17 s of single
            # calls): the queue was full a moment ago, and block=True is the way to wait
            # for room.
            for at, (news, fut) in enumerate(batch):
                self._deliver([(news, fut)])
                full = fut.exception() if fut.done() and not fut.cancelled() else None
                if isinstance(full, QueueFullError):
                    for later, later_fut in batch[at + 1:]:
                        self._fail(later_fut, QueueFullError(full.max_size, len(later)))
                    return
            return
        except BaseException as err:  # Ctrl-C in a leader: fail the batch, stop here
            for _, fut in batch:
                self._fail(fut, QueueUnavailableError(
                    f"enqueue interrupted ({type(err).__name__}); the tasks may or may not "
                    "be in the queue: retry with the same task ids to be safe"))
            raise
        at = 0
        for news, fut in batch:
            if not fut.done():
                fut.set_result(ids[at : at + len(news)])
            at += len(news)


    def _fail(self, fut: Future[list[str]], err: BaseException) -> None:
        with self._cond:
            self._errors.append(err)
        if not fut.done():
            fut.set_exception(err)


def settled(fut: Future[list[str]]) -> asyncio.Future[list[str]]:
    """``asyncio.wrap_future(fut)`` for a submission, on the running loop, with one
    wake-up of the loop per answered batch rather than one per submission.

    ``wrap_future`` sets each asyncio future through its own ``call_soon_threadsafe``:
    a write to the loop's wake-up pipe per task, which cost ``enqueue_async`` callers
    more CPU than the enqueue itself when thousands share one call.
    """
    loop = asyncio.get_running_loop()
    with _WAKERS_LOCK:
        try:
            waker = _WAKERS.get(loop)
            if waker is None:
                waker = _WAKERS[loop] = _Waker(loop)
        except TypeError:  # a loop that cannot be weakly referenced (some C loops)
            return asyncio.wrap_future(fut)
    out: asyncio.Future[list[str]] = loop.create_future()
    fut.add_done_callback(functools.partial(waker.add, out))
    return out


class _Waker:
    """Answered submissions waiting to be handed to one event loop's futures."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        #: weakly: the table of wakers is keyed by the loop, so a strong reference here
        #: would keep every loop that ever awaited an enqueue (and its pipe) alive
        self._loop = weakref.ref(loop)
        self._lock = threading.Lock()
        self._ready: list[tuple[asyncio.Future[list[str]], Future[list[str]]]] = []

    def add(self, out: asyncio.Future[list[str]], fut: Future[list[str]]) -> None:
        """``fut`` was answered (in any thread): hand it to ``out``, soon, on the loop."""
        with self._lock:
            self._ready.append((out, fut))
            if len(self._ready) > 1:
                return  # a wake-up is on its way and will take this one too
        loop = self._loop()
        if loop is not None:
            try:
                loop.call_soon_threadsafe(self._hand_over)
                return
            except RuntimeError:  # the loop was closed
                pass
        with self._lock:  # the loop is closed or gone: nobody waits, keep nothing
            self._ready.clear()

    def _hand_over(self) -> None:
        with self._lock:
            ready, self._ready = self._ready, []
        for out, fut in ready:
            if out.done():  # its waiter was cancelled
                continue
            if fut.cancelled():
                out.cancel()
                continue
            err = fut.exception()
            if err is not None:
                out.set_exception(err)
            else:
                out.set_result(fut.result())


_WAKERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Waker] = \
    weakref.WeakKeyDictionary()
_WAKERS_LOCK = threading.Lock()


_LIVE: weakref.WeakSet[Sender] = weakref.WeakSet()


@atexit.register
def _flush_all() -> None:
    """At interpreter exit, send what producers left buffered (bounded wait)."""
    for sender in list(_LIVE):
        if not sender.pending:
            continue
        earlier = len(sender.take_errors())  # already raised by sent() or left unread
        if not sender.flush(timeout=10.0):
            logger.warning("{} task(s) not sent before exit", sender.pending,
                           action="enqueue_unsent")
        errors = sender.take_errors()
        if errors:  # the tasks sent at exit that the queue refused: nobody else will know
            logger.error("{} enqueue(s) sent at exit failed (and {} earlier ones); the "
                         "first: {}", len(errors), earlier, errors[0],
                         action="enqueue_failed", errors=len(errors))
