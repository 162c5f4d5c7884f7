"""The wire format between rayqueue's own processes (client, queue, workers).

Ray serializes a list of dataclasses object by object (a pickle each, through a
Python-level ``__getstate__``): 100 leases cost ~5 ms a call. A batch goes across as one
pickle of plain tuples instead (~0.1 ms), with shared retry policies pickled once. Only
our own actors exchange these blobs, in the same way Ray pickles every argument. A retry
policy travels as its numbers (as in the journal): its exception types may be classes
of a notebook or script that plain pickle cannot rebuild elsewhere, and only the
worker's own class decides what is retryable.
"""

from __future__ import annotations

import pickle
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from rayqueue.core.lease import Failure, Lease, Outcome
from rayqueue.core.record import ErrorInfo, Limit, NewTask, Step
from rayqueue.core.retry import RetryPolicy


def _policy_out(policy: RetryPolicy, seen: dict[int, dict[str, Any]]) -> dict[str, Any]:
    found = seen.get(id(policy))
    if found is None:
        found = seen[id(policy)] = policy.to_json()
    return found


def _policy_in(data: dict[str, Any], seen: dict[int, RetryPolicy]) -> RetryPolicy:
    # Pickle keeps shared objects shared: the tasks of one policy load with one dict,
    # alive while the blob's list is, so its id is the key (sorting its items per task
    # was 4% of the queue actor's CPU in a drain).
    found = seen.get(id(data))
    if found is None:
        found = seen[id(data)] = RetryPolicy.from_json(data)
    return found


def pack_leases(leases: list[Lease]) -> bytes:
    """Leases as one compact blob (see :func:`unpack_leases`)."""
    seen: dict[int, dict[str, Any]] = {}
    return pickle.dumps([(x.task_id, x.token, x.task_name, x.payload, x.attempt, x.priority,
                          x.pool, x.expires_at, x.timeout, _policy_out(x.retry, seen),
                          x.suspect, x.confirm, x.headers, x.feed) for x in leases], protocol=5)


def unpack_leases(blob: bytes) -> list[Lease]:
    """The leases packed by :func:`pack_leases`."""
    seen: dict[int, RetryPolicy] = {}
    return [Lease(t, tok, name, payload, attempt, prio, pool, exp, timeout,
                  _policy_in(retry, seen), suspect, confirm, headers, feed)
            for t, tok, name, payload, attempt, prio, pool, exp, timeout, retry, suspect, confirm,
            headers, feed in pickle.loads(blob)]


def pack_outcomes(outcomes: list[Outcome]) -> bytes:
    """Outcomes as one compact blob (see :func:`unpack_outcomes`)."""
    return pickle.dumps([
        (o.task_id, o.token, o.result, None if o.failure is None else (
            o.failure.error.type, o.failure.error.message, o.failure.error.traceback,
            o.failure.retryable, o.failure.retry_delay, o.failure.reason))
        for o in outcomes], protocol=5)


def unpack_outcomes(blob: bytes) -> list[Outcome]:
    """The outcomes packed by :func:`pack_outcomes`."""
    return [Outcome(task_id, token, result, None if f is None else Failure(
        ErrorInfo(f[0], f[1], f[2]), f[3], f[4], f[5]))
        for task_id, token, result, f in pickle.loads(blob)]


def pack_news(news: Sequence[NewTask]) -> bytes:
    """Enqueue requests as one compact blob (see :func:`unpack_news`)."""
    seen: dict[int, dict[str, Any]] = {}
    return pickle.dumps([(n.task_name, n.payload, n.priority, n.pool, n.run_at, n.task_id,
                          _policy_out(n.retry, seen), n.timeout, n.delay, n.headers,
                          None if n.limit is None else n.limit.to_json(),
                          None if n.step is None else n.step.to_json())
                         for n in news], protocol=5)


def unpack_news(blob: bytes) -> list[NewTask]:
    """The enqueue requests packed by :func:`pack_news`."""
    seen: dict[int, RetryPolicy] = {}
    return [NewTask(name, payload, prio, pool, run_at, task_id, _policy_in(retry, seen),
                    timeout, delay, headers, None if limit is None else Limit(*limit),
                    Step.from_json(step))
            for name, payload, prio, pool, run_at, task_id, retry, timeout, delay, headers, limit,
            step in pickle.loads(blob)]


@dataclass(frozen=True, slots=True)
class ClaimRequest:
    """A worker's (or a ``dequeue``'s) claim on a queue shard (``QueueActor.claim``)."""

    #: who claims (worker id, or the client's id for ``dequeue``)
    worker: str
    pool: str = "default"
    #: leases wanted for free slots
    max_n: int = 1
    #: seconds to wait for work when there is none (a long-poll)
    wait: float = 1.0
    #: the claimer runs nothing now (it may then get a suspect task)
    idle: bool = True
    #: every task the claimer holds or has not seen acknowledged; leases it holds that
    #: are not listed were granted by claims whose replies it never got, and go back
    held: Sequence[str] | None = None
    #: more of the first task's priority that may follow (see QueueCore.claim)
    prefetch: int = 0
    #: hand out nothing ranked worse than this (sharded queues; see QueueCore.claim)
    no_worse_than: float | None = None
    #: answer the rank of the best task left, too
    rank: bool = False
    #: finished attempts (``pack_outcomes``) to record first, as a report would
    outcomes: bytes | None = None
    #: the claimer confirms starts of leases marked ``confirm`` (QueueCore.claim)
    confirm: bool = False


@dataclass(frozen=True, slots=True)
class ClaimReply:
    """Leases (``pack_leases``) and, when asked, the rank of the best task left."""

    leases: bytes
    rank: float | None = None



# ------------------------------------------------------------------ metrics events
# What the queue and pool actors tell the metrics actor, in batches (never one call per
# task). NamedTuples: typed and named, yet as cheap to build and pickle as tuples. The
# per-task figures (start waits, run times) travel packed, a few events per flush: as
# two objects per task they cost the queue actor ~14 us a task to build and serialize.


class Enqueued(NamedTuple):
    """``n`` tasks of a type were enqueued."""

    task_name: str
    n: int


class Started(NamedTuple):
    """Attempts of a task type that started: each one's wait from due to start, in s
    (``array('d')``, one float each)."""

    task_name: str
    waits: array[float]


class Finished(NamedTuple):
    """Attempts of a task type that ended with one outcome: ``succeeded``, ``retried``,
    ``dead``, ``lost`` or ``timed_out``. ``runs``: the run times the queue saw, in s
    (``array('d')``); ``unseen``: how many more ended without a run time (a lost worker)."""

    task_name: str
    outcome: str
    runs: array[float]
    unseen: int = 0

    @property
    def n(self) -> int:
        """Attempts in all."""
        return len(self.runs) + self.unseen


class Tally:
    """Start waits and run times by task type since the last flush, packed as they come
    (8 bytes each), then taken as a few ``Started``/``Finished`` events."""

    __slots__ = ("ends", "starts")

    def __init__(self) -> None:
        #: task name -> waits
        self.starts: dict[str, array[float]] = {}
        #: (task name, outcome) -> [run times, ends without one]
        self.ends: dict[tuple[str, str], tuple[array[float], list[int]]] = {}

    def start(self, task_name: str, wait_s: float) -> None:
        """One attempt started ``wait_s`` after its task was due."""
        waits = self.starts.get(task_name)
        if waits is None:
            waits = self.starts[task_name] = array("d")
        waits.append(wait_s)

    def end(self, task_name: str, outcome: str, run_s: float | None) -> None:
        """One attempt ended (``run_s`` None: the queue did not see it run)."""
        key = (task_name, outcome)
        found = self.ends.get(key)
        if found is None:
            found = self.ends[key] = (array("d"), [0])
        if run_s is None:
            found[1][0] += 1
        else:
            found[0].append(run_s)

    def take(self) -> list[Started | Finished]:
        """The events since the last take; empties the tally."""
        out: list[Started | Finished] = [Started(name, waits)
                                         for name, waits in self.starts.items()]
        out += [Finished(name, outcome, runs, unseen[0])
                for (name, outcome), (runs, unseen) in self.ends.items()]
        self.starts, self.ends = {}, {}
        return out


class FailedAttempt(NamedTuple):
    """A failed attempt, for the list of recent failures."""

    at: float
    task_id: str
    task_name: str
    outcome: str
    state: str
    error_type: str
    message: str
    attempt: int


class Depth(NamedTuple):
    """One shard's counts by state and ready tasks by pool and priority (a sharded
    queue's are summed over its shards)."""

    by_state: dict[str, int]
    ready_by_priority: dict[str, dict[int, int]]
    shard: int = 0


class JournalHealth(NamedTuple):
    """Whether one shard's journal is failing commits, and whether because it is full."""

    shard: int
    failing: bool
    full: bool


class Calls(NamedTuple):
    """Actor calls a queue shard served of a kind (``enqueue``, ``claim``, ``report``)
    since its last event, and the tasks they carried."""

    kind: str
    calls: int
    items: int


class Workers(NamedTuple):
    """The pool manager's pools and workers (``PoolInfo``, ``WorkerInfo`` lists)."""

    pools: list[Any]
    workers: list[Any]


Event = Enqueued | Started | Finished | FailedAttempt | Depth | JournalHealth | Calls | Workers
