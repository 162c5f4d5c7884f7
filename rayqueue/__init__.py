"""rayqueue: a typed, prioritized, scheduled, durable task queue on Ray's actor model.

``import rayqueue`` does not import Ray: the client names (``init``, ``connect``,
``TaskQueue``, ``TaskHandle``, ``ClaimedTask``) load it on first use, so the pure core
and task definitions stay cheap to import in tests and tools.
"""

from typing import TYPE_CHECKING, Any

from rayqueue.config import PoolConfig
from rayqueue.core.clock import Clock, FakeClock, OffsetClock, SystemClock
from rayqueue.core.lease import Failure, Lease, Outcome
from rayqueue.core.priority import PRIORITY_MAX, PRIORITY_MIN, Priority
from rayqueue.core.queue import QueueConfig, QueueCore, TickReport
from rayqueue.core.record import ErrorInfo, NewTask, ScheduleRecord, TaskRecord, TaskState
from rayqueue.core.retry import Retry, RetryPolicy
from rayqueue.core.scaling import ScalingConfig, ScalingDecision, ScalingPolicy
from rayqueue.core.schedule import CronSpec, IntervalSpec, MisfirePolicy
from rayqueue.core.stats import QueueStats
from rayqueue.errors import (
    DuplicateTaskError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    InvalidNameError,
    InvalidPayloadError,
    InvalidPriorityError,
    InvalidResultError,
    InvalidScheduleError,
    InvalidStateError,
    InvalidTaskError,
    JournalCorruptError,
    JournalNotFoundError,
    NaiveDatetimeError,
    PartialEnqueueError,
    PayloadTooLargeError,
    QueueBusyError,
    QueueClosedError,
    QueueError,
    QueueFullError,
    QueueLostError,
    QueueUnavailableError,
    RayQueueError,
    ResultTimeoutError,
    StaleLeaseError,
    StorageBusyError,
    StorageError,
    StorageFullError,
    TaskCancelledError,
    TaskError,
    TaskFailedError,
    TaskNotFoundError,
    UnknownTaskError,
)
from rayqueue.info import FailureInfo, MetricsSnapshot, PoolInfo, TaskInfo, WorkerInfo
from rayqueue.middleware import Attempt, AttemptResult, Message, Middleware, TaskEnd, WorkerStart
from rayqueue.storage import InMemoryStorage, Storage
from rayqueue.task import Task, lookup, register

if TYPE_CHECKING:
    from rayqueue.client import TaskQueue, connect, init
    from rayqueue.handle import ClaimedTask, TaskHandle

_CLIENT = ("init", "connect", "TaskQueue", "TaskHandle", "ClaimedTask")


def __getattr__(name: str) -> Any:
    if name in _CLIENT:
        from rayqueue import client, handle

        return getattr(handle if name in ("TaskHandle", "ClaimedTask") else client, name)
    raise AttributeError(f"module 'rayqueue' has no attribute {name!r}")


__all__ = [
    # the client (on Ray)
    "init",
    "connect",
    "TaskQueue",
    "TaskHandle",
    "ClaimedTask",
    "PoolConfig",
    "TaskInfo",
    "WorkerInfo",
    "PoolInfo",
    "MetricsSnapshot",
    "FailureInfo",
    # middleware (see rayqueue.middleware)
    "Middleware",
    "Message",
    "Attempt",
    "AttemptResult",
    "TaskEnd",
    "WorkerStart",
    # typed tasks
    "Task",
    "Priority",
    "PRIORITY_MIN",
    "PRIORITY_MAX",
    "RetryPolicy",
    "Retry",
    "register",
    "lookup",
    # schedules
    "CronSpec",
    "IntervalSpec",
    "MisfirePolicy",
    # the pure core
    "QueueCore",
    "QueueConfig",
    "QueueStats",
    "NewTask",
    "TaskRecord",
    "TaskState",
    "ScheduleRecord",
    "Lease",
    "Outcome",
    "Failure",
    "ErrorInfo",
    "TickReport",
    "ScalingConfig",
    "ScalingDecision",
    "ScalingPolicy",
    # time and storage
    "Clock",
    "SystemClock",
    "FakeClock",
    "OffsetClock",
    "Storage",
    "InMemoryStorage",
    # errors
    "RayQueueError",
    "TaskError",
    "UnknownTaskError",
    "InvalidPayloadError",
    "InvalidResultError",
    "InvalidTaskError",
    "PayloadTooLargeError",
    "TaskFailedError",
    "TaskCancelledError",
    "QueueError",
    "InvalidPriorityError",
    "InvalidScheduleError",
    "NaiveDatetimeError",
    "PartialEnqueueError",
    "QueueFullError",
    "QueueClosedError",
    "QueueBusyError",
    "DuplicateTaskError",
    "TaskNotFoundError",
    "InvalidStateError",
    "StaleLeaseError",
    "QueueLostError",
    "QueueUnavailableError",
    "ResultTimeoutError",
    "InvalidArgumentError",
    "InvalidArgumentTypeError",
    "InvalidNameError",
    "StorageError",
    "StorageBusyError",
    "StorageFullError",
    "JournalNotFoundError",
    "JournalCorruptError",
]
