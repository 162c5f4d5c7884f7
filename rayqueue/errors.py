"""The error tree: every error rayqueue raises derives from one root.

::

    RayQueueError
    ├── TaskError                    problems with a task type or a payload
    │   ├── UnknownTaskError         a task name that no registered class has
    │   ├── InvalidPayloadError      a payload that fails validation
    │   ├── InvalidTaskError         an id, name or field the journal cannot store (a ValueError)
    │   ├── InvalidResultError       a result or retry delay that cannot be stored faithfully
    │   ├── PayloadTooLargeError     a payload over the configured byte limit
    │   └── TaskFailedError          the task ran and failed for good (carries remote type/text)
    │       └── TaskCancelledError   ... it was cancelled (``queue.cancel``), before or while it ran
    ├── QueueError                   problems with a queue operation
    │   ├── InvalidPriorityError     not an int in [PRIORITY_MIN, PRIORITY_MAX]
    │   ├── InvalidScheduleError     bad delay, invalid cron or time zone
    │   │   └── NaiveDatetimeError   a datetime without a time zone
    │   ├── QueueFullError           the queue holds max_size unfinished tasks
    │   ├── PartialEnqueueError      some shards took their part of a batch, others failed
    │   ├── QueueClosedError         the queue was closed
    │   ├── DuplicateTaskError       same task id, different payload
    │   ├── TaskNotFoundError        no task (or schedule) with that id
    │   ├── InvalidStateError        the operation does not apply to the task's state
    │   │   └── PurgeRefusedError    purge asked for unfinished tasks
    │   ├── StaleLeaseError          a lease token that is no longer current (fencing)
    │   ├── QueueUnavailableError    the queue actor cannot be reached
    │   │   ├── QueueLostError       ... and will not come back by itself (not retried)
    │   │   ├── QueueNotFoundError   no queue of that name on the cluster (lists those there)
    │   │   ├── ClusterNotFoundError no Ray cluster to attach to (connect never starts one)
    │   │   └── AmbiguousClusterError several Ray clusters on this machine, none chosen
    │   ├── QueueRunningError        delete asked for a queue that runs and is open
    │   ├── QueueBusyError           too many calls already waiting on the queue actor
    │   └── ResultTimeoutError       a result was not ready within the timeout
    ├── InvalidArgumentError         an argument or setting a public call cannot use (a ValueError)
    │   ├── InvalidArgumentTypeError ... of the wrong type (also a TypeError)
    │   └── InvalidNameError         a queue or task name outside the allowed form
    └── StorageError                 the journal failed; the operation changed nothing
        ├── StorageBusyError         another writer held the journal past the busy timeout
        │   └── JournalInUseError    another live process owns the journal (named)
        ├── StorageFullError         the disk (or the journal's size cap) is full
        ├── JournalNotFoundError     no journal at its path (e.g. the actor moved node)
        ├── JournalCorruptError      a journal missing a part, damaged, or another queue's
        └── JournalFencedError       a newer owner took the (PostgreSQL) journal over

Every error carries its context as typed attributes and says what to do next.
"""

from __future__ import annotations

import shlex
from typing import Any


class RayQueueError(Exception):
    """Base class of every rayqueue error."""

    def __reduce__(self) -> tuple[Any, ...]:
        # Subclasses take typed arguments, not the message; rebuild them from their
        # state so they survive pickling across Ray processes with their attributes.
        return (_rebuild, (type(self), self.args, self.__dict__))


def _rebuild(cls: type[RayQueueError], args: tuple[Any, ...],
             state: dict[str, Any]) -> RayQueueError:
    err = cls.__new__(cls)
    err.args = args
    err.__dict__.update(state)
    return err


class TaskError(RayQueueError):
    """A task type or payload problem."""


class UnknownTaskError(TaskError):
    """No registered task class has this name."""

    def __init__(self, task_name: str, cause: str | None = None) -> None:
        self.task_name = task_name
        #: why a class shipped under this name could not be loaded here, if one was
        self.cause = cause
        why = f" (the shipped class does not load here: {cause})" if cause else ""
        super().__init__(
            f"unknown task name {task_name!r}{why}: define (and import) a Task subclass "
            "with this name in the process that runs it, or make its module importable "
            "there"
        )


class InvalidPayloadError(TaskError):
    """A payload that does not validate against its task model."""

    def __init__(self, task_name: str, detail: str) -> None:
        self.task_name = task_name
        self.detail = detail
        super().__init__(f"invalid payload for task {task_name!r}: {detail}")


class InvalidTaskError(TaskError, ValueError):
    """A task request the queue cannot store: an id, name or field out of its bounds.

    Refused before it joins a batch, so it fails only its own enqueue.
    """

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(detail)


class InvalidLimitError(InvalidTaskError):
    """A task type's ``rate_limit``, ``concurrency_limit`` or ``concurrency_key`` is not
    valid (a rate that is not ``"N/s"``, ``"N/m"`` or ``"N/h"``, a limit below 1, a key
    that names no payload field). Raised at class definition, or at enqueue."""


class InvalidWorkflowError(InvalidTaskError):
    """A workflow (chain, group, chord) that cannot be enqueued: an empty group, too many
    steps, a step's input that names no payload field of its task, a parent that is not
    in the queue, or a placeholder of another workflow. Raised before anything of it is
    enqueued."""


class InvalidResultError(TaskError, ValueError):
    """A result (or a retry request) the queue cannot store faithfully: one that does
    not match the task's declared result type, NaN or an infinity, too large, or a retry
    delay that is not finite seconds.

    Attributes:
        detail: what is wrong.
        task_name: the task whose result it is (None for a retry request).
    """

    def __init__(self, detail: str, task_name: str | None = None) -> None:
        self.detail = detail
        self.task_name = task_name
        super().__init__(detail if task_name is None
                         else f"invalid result of task {task_name!r}: {detail}")


class PayloadTooLargeError(TaskError):
    """A payload whose JSON is larger than the queue accepts."""

    def __init__(self, task_name: str, size: int, limit: int) -> None:
        self.task_name = task_name
        self.size = size
        self.limit = limit
        super().__init__(
            f"payload of task {task_name!r} is {size} bytes of JSON, over the limit of "
            f"{limit}: pass a reference (a path or key) instead of the data"
        )


class TaskFailedError(TaskError):
    """The task failed for good; ``error_type`` and ``error_message`` come from the worker."""

    def __init__(
        self, task_id: str, state: str, error_type: str | None, error_message: str | None
    ) -> None:
        self.task_id = task_id
        self.state = state
        self.error_type = error_type
        self.error_message = error_message
        super().__init__(
            f"task {task_id!r} ended {state}: {error_type or 'error'}: {error_message or ''}"
        )


class TaskCancelledError(TaskFailedError):
    """The task was cancelled (``queue.cancel(id)`` / ``handle.cancel()``), before it
    started or while it ran; ``state`` is ``cancelled``."""


class QueueError(RayQueueError):
    """A queue operation that cannot be done."""


class InvalidPriorityError(QueueError):
    """A priority that is not an integer within the documented range."""

    def __init__(self, value: object, low: int, high: int) -> None:
        self.value = value
        super().__init__(
            f"invalid priority {value!r}: use an int from {low} to {high} "
            "(or a rayqueue.Priority level)"
        )


class InvalidScheduleError(QueueError):
    """A schedule that cannot be honoured: naive datetime, bad delay, bad cron or zone."""


class NaiveDatetimeError(InvalidScheduleError):
    """A datetime without a time zone: when it is would depend on the machine."""


class QueueFullError(QueueError):
    """The queue already holds ``max_size`` unfinished tasks."""

    def __init__(self, max_size: int, adding: int) -> None:
        self.max_size = max_size
        self.adding = adding
        super().__init__(
            f"queue is full (max_size={max_size}); could not add {adding} task(s): "
            "retry later or raise max_size"
        )


class QueueClosedError(QueueError):
    """The queue was closed; no more tasks are accepted."""


class DuplicateTaskError(QueueError):
    """A task id that already exists with a different payload."""

    def __init__(self, task_id: str, detail: str | None = None) -> None:
        self.task_id = task_id
        super().__init__(
            f"id {task_id!r} is taken: {detail}" if detail else
            f"task id {task_id!r} already exists with a different task or payload: "
            "use a new id, or the same payload to make enqueue idempotent"
        )


class TaskNotFoundError(QueueError):
    """No task (or schedule) with this id."""

    def __init__(self, task_id: str, detail: str | None = None) -> None:
        self.task_id = task_id
        super().__init__(detail or f"no task or schedule with id {task_id!r} (its result "
                         "may have expired)")


class InvalidStateError(QueueError):
    """The operation does not apply to the task in its current state."""

    def __init__(self, task_id: str, state: str, operation: str) -> None:
        self.task_id = task_id
        self.state = state
        self.operation = operation
        super().__init__(f"cannot {operation} task {task_id!r}: it is {state}")


class PurgeRefusedError(InvalidStateError):
    """``purge`` was asked to remove unfinished tasks (ready, scheduled, leased or
    waiting for a retry): only succeeded, dead and cancelled tasks are purged."""

    def __init__(self, states: list[str]) -> None:
        QueueError.__init__(
            self, f"cannot purge {', '.join(states)} tasks: only succeeded, dead and "
            "cancelled tasks can be purged (cancel unfinished tasks first)")
        self.task_id = ""
        self.state = ",".join(states)
        self.operation = "purge"


class StaleLeaseError(QueueError):
    """A lease token that is no longer current: the task was re-leased or finished."""

    def __init__(self, token: int) -> None:
        self.token = token
        super().__init__(
            f"lease {token} is no longer current (expired, released or fenced); "
            "the outcome was not recorded"
        )


class PartialEnqueueError(QueueError):
    """Some shards of a sharded queue took their part of a batch; others failed.

    Attributes:
        enqueued: ids now in the queue (do not enqueue them again with new ids).
        failed: ids that are not in the queue, or may not be.
        cause: the first shard's error.

    Retrying with the same ids is safe: ids already in the queue are not added twice.
    """

    def __init__(self, enqueued: list[str], failed: list[str], cause: BaseException) -> None:
        self.enqueued = enqueued
        self.failed = failed
        self.cause = cause
        super().__init__(
            f"{len(enqueued)} task(s) were enqueued and {len(failed)} were not "
            f"({type(cause).__name__}: {cause}); retry the failed ids (e.failed) with "
            "the same ids, or all of them: enqueue is idempotent on ids")


class QueueUnavailableError(QueueError):
    """The queue actor could not be reached; the operation may not have happened."""


class QueueLostError(QueueUnavailableError):
    """The queue actor is dead for good: Ray cannot place it (the node holding its
    journal is gone) or it failed to start. Calls are not retried; the message says
    what to do (bring the journal's node back, then ``rayqueue.init`` again)."""


class QueueNotFoundError(QueueUnavailableError):
    """The cluster answered, but runs no queue of this name.

    Attributes:
        queue: the name asked for.
        address: the cluster's address.
        queues: the names of the queues that do run there (sorted).
    """

    def __init__(self, queue: str, address: str, queues: list[str]) -> None:
        self.queue = queue
        self.address = address
        self.queues = queues
        there = (f"the queues there: {', '.join(queues)}" if queues
                 else "it runs no rayqueue queue")
        super().__init__(
            f"no rayqueue queue named {queue!r} on the Ray cluster at {address} ({there}); "
            f"create it with rayqueue.init({queue!r}) on that cluster, or attach to "
            "another cluster with address= (the CLI's --address) or RAY_ADDRESS")


class ClusterNotFoundError(QueueUnavailableError):
    """No Ray cluster to attach to: none runs on this machine, or none answers at the
    address given. ``connect`` (and the CLI) never start one.

    Attributes:
        address: the address tried (None: this machine was searched).
    """

    def __init__(self, address: str | None, detail: str = "") -> None:
        self.address = address
        where = (f"no Ray cluster answers at {address}" if address is not None
                 else "no Ray cluster runs on this machine")
        super().__init__(
            f"{where}{f' ({detail})' if detail else ''}: rayqueue.connect and the CLI attach "
            "to a running cluster and never start one. Start one (`ray start --head`, or a "
            "driver calling rayqueue.init), or give the address of a running one with "
            "address= (the CLI's --address) or RAY_ADDRESS")


class AmbiguousClusterError(QueueUnavailableError):
    """Several Ray clusters run on this machine and no address chose one.

    Attributes:
        addresses: each cluster's GCS address (``host:port``), sorted.
        details: a short description of each (its session directory), same order.
    """

    def __init__(self, addresses: list[str], details: list[str] | None = None) -> None:
        self.addresses = addresses
        self.details = details or ["" for _ in addresses]
        listed = "; ".join(f"{a} ({d})" if d else a
                           for a, d in zip(addresses, self.details, strict=True))
        super().__init__(
            f"{len(addresses)} Ray clusters run on this machine: {listed}. rayqueue does "
            "not guess which one holds your queue: pick one with address='HOST:PORT' "
            "(the CLI's --address HOST:PORT) or RAY_ADDRESS=HOST:PORT")


class QueueRunningError(QueueError):
    """``rayqueue.delete`` was asked to remove a queue that runs and takes tasks:
    close it first (``queue.close()``), or shut it down."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(
            f"queue {name!r} is running and open: close it first (queue.close(), then "
            "delete shuts it down and removes it) or shut it down (queue.shutdown())")


class QueueBusyError(QueueError):
    """Too many calls from this client are already waiting on the queue actor."""


class ResultTimeoutError(QueueError):
    """The task did not finish within the timeout."""

    def __init__(self, task_id: str, timeout: float) -> None:
        self.task_id = task_id
        self.timeout = timeout
        super().__init__(f"task {task_id!r} did not finish within {timeout}s")


class InvalidArgumentError(RayQueueError, ValueError):
    """An argument or setting that a public call cannot use; nothing was changed.

    A ``ValueError`` too, so ``except ValueError`` written against plain validation
    keeps working.

    Attributes:
        argument: the argument's (or setting's) name.
    """

    def __init__(self, argument: str, message: str) -> None:
        self.argument = argument
        super().__init__(f"{argument}: {message}")


class InvalidArgumentTypeError(InvalidArgumentError, TypeError):
    """An argument of the wrong type (a ``TypeError`` as well as a ``ValueError``)."""


class InvalidNameError(InvalidArgumentError):
    """A queue or task name outside the allowed form (see the README, "Names")."""


class StorageError(RayQueueError):
    """The journal could not record a change; the operation changed nothing."""


class StorageBusyError(StorageError):
    """Another connection held the journal locked longer than the busy timeout."""


class StorageFullError(StorageError):
    """The journal's disk (or its configured size cap) is full."""


class JournalNotFoundError(StorageError):
    """The queue's journal is not at its path.

    Typically the queue actor was restarted on another node. It refuses to start with an
    empty queue, which would silently lose every task.
    """

    def __init__(self, path: str, hint: str | None = None) -> None:
        self.path = path
        super().__init__(
            f"the queue journal is missing at {path!r}: " + (hint or (
                "the queue actor must run on the node that holds it (it refuses to start "
                "with an empty queue); pin the actor to that node, or move the file there"))
        )


class JournalCorruptError(StorageError):
    """A journal that is missing a part, damaged, or another queue's (or shard's).

    The queue refuses to open it, and leaves every file of it exactly as it was.

    Attributes:
        path: the journal's main file.
        problem: what is wrong with it.
    """

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(
            f"the queue journal at {path!r} is refused and was left as it was: {problem}. "
            f"See what it holds with `rayqueue journal check --journal {shlex.quote(path)}`, "
            "then restore it from a backup (`rayqueue journal restore`) or put the missing "
            "file back"
        )


class JournalInUseError(StorageBusyError):
    """A journal another live process holds open: a journal has one owner at a time.

    Attributes:
        path: the journal's main file.
        owner: what the owner wrote when it took the journal (queue, pid, host, since).
    """

    def __init__(self, path: str, owner: str) -> None:
        self.path = path
        self.owner = owner
        super().__init__(
            f"the queue journal at {path!r} is in use by {owner}: a journal has one owner "
            "at a time, so a second queue (or a second copy of this one) cannot open it. "
            "Stop that one first, or give this queue its own journal path")


class JournalFencedError(StorageError):
    """A newer owner opened this (PostgreSQL) journal: this one may no longer write.

    Every commit checks the owner epoch its opener took; a commit whose epoch is no
    longer current is refused whole, and the journal refuses every later call. A queue
    actor that gets it stops serving: the newer incarnation owns the tasks.

    Attributes:
        journal: the journal (its URL without the password, and schema).
        epoch: the epoch this opener held.
        current: the epoch now current (None if unknown).
    """

    def __init__(self, journal: str, epoch: int, current: int | None) -> None:
        self.journal = journal
        self.epoch = epoch
        self.current = current
        super().__init__(
            f"the queue journal {journal} was taken over by a newer owner (epoch "
            f"{'?' if current is None else current}, this one held {epoch}): nothing of this "
            "commit was written, and this journal refuses every further call. The newer "
            "queue actor serves the queue now")
