"""rayqueue: a typed, prioritized, scheduled, durable task queue on Ray's actor model.

``import rayqueue`` imports only the error tree: every other name loads its module on
first use (the client names ``init``, ``connect``, ``queues``, ``TaskQueue``,
``TaskHandle``, ``ClaimedTask`` load Ray), so the pure core and task definitions stay
cheap to import in tests and tools, and ``rayqueue --help`` answers at once.
"""

import importlib
from typing import TYPE_CHECKING, Any

from rayqueue.errors import (
    AmbiguousClusterError,
    ClusterNotFoundError,
    DuplicateTaskError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    InvalidLimitError,
    InvalidNameError,
    InvalidPayloadError,
    InvalidPriorityError,
    InvalidResultError,
    InvalidScheduleError,
    InvalidStateError,
    InvalidTaskError,
    InvalidWorkflowError,
    JournalCorruptError,
    JournalFencedError,
    JournalNotFoundError,
    NaiveDatetimeError,
    PartialEnqueueError,
    PayloadTooLargeError,
    PurgeRefusedError,
    QueueBusyError,
    QueueClosedError,
    QueueError,
    QueueFullError,
    QueueLostError,
    QueueNotFoundError,
    QueueRunningError,
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

if TYPE_CHECKING:
    from rayqueue.bootstrap import connect, delete, init, queues
    from rayqueue.client import TaskQueue
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
    from rayqueue.functions import FunctionTask, function_task
    from rayqueue.handle import ClaimedTask, GroupHandle, TaskHandle
    from rayqueue.info import (
        AttemptInfo,
        FailureInfo,
        MetricsSnapshot,
        PoolInfo,
        TaskInfo,
        TaskPage,
        WorkerInfo,
    )
    from rayqueue.middleware import (
        Attempt,
        AttemptResult,
        Message,
        Middleware,
        TaskEnd,
        WorkerStart,
    )
    from rayqueue.registry import QueueEntry
    from rayqueue.storage import InMemoryStorage, Storage
    from rayqueue.task import Task, lookup, register
    from rayqueue.workflow import Chain, Group, chain, group

#: where each lazily loaded name lives
_LAZY = {
    "PoolConfig": "rayqueue.config",
    "Clock": "rayqueue.core.clock",
    "FakeClock": "rayqueue.core.clock",
    "OffsetClock": "rayqueue.core.clock",
    "SystemClock": "rayqueue.core.clock",
    "Failure": "rayqueue.core.lease",
    "Lease": "rayqueue.core.lease",
    "Outcome": "rayqueue.core.lease",
    "PRIORITY_MAX": "rayqueue.core.priority",
    "PRIORITY_MIN": "rayqueue.core.priority",
    "Priority": "rayqueue.core.priority",
    "QueueConfig": "rayqueue.core.queue",
    "QueueCore": "rayqueue.core.queue",
    "TickReport": "rayqueue.core.queue",
    "ErrorInfo": "rayqueue.core.record",
    "NewTask": "rayqueue.core.record",
    "ScheduleRecord": "rayqueue.core.record",
    "TaskRecord": "rayqueue.core.record",
    "TaskState": "rayqueue.core.record",
    "Retry": "rayqueue.core.retry",
    "RetryPolicy": "rayqueue.core.retry",
    "ScalingConfig": "rayqueue.core.scaling",
    "ScalingDecision": "rayqueue.core.scaling",
    "ScalingPolicy": "rayqueue.core.scaling",
    "CronSpec": "rayqueue.core.schedule",
    "IntervalSpec": "rayqueue.core.schedule",
    "MisfirePolicy": "rayqueue.core.schedule",
    "QueueStats": "rayqueue.core.stats",
    "FailureInfo": "rayqueue.info",
    "MetricsSnapshot": "rayqueue.info",
    "PoolInfo": "rayqueue.info",
    "TaskInfo": "rayqueue.info",
    "TaskPage": "rayqueue.info",
    "AttemptInfo": "rayqueue.info",
    "WorkerInfo": "rayqueue.info",
    "Middleware": "rayqueue.middleware",
    "Message": "rayqueue.middleware",
    "Attempt": "rayqueue.middleware",
    "AttemptResult": "rayqueue.middleware",
    "TaskEnd": "rayqueue.middleware",
    "WorkerStart": "rayqueue.middleware",
    "InMemoryStorage": "rayqueue.storage",
    "Storage": "rayqueue.storage",
    "Task": "rayqueue.task",
    "function_task": "rayqueue.functions",
    "FunctionTask": "rayqueue.functions",
    "lookup": "rayqueue.task",
    "register": "rayqueue.task",
    "TaskQueue": "rayqueue.client",
    "connect": "rayqueue.bootstrap",
    "init": "rayqueue.bootstrap",
    "queues": "rayqueue.bootstrap",
    "delete": "rayqueue.bootstrap",
    "ClaimedTask": "rayqueue.handle",
    "TaskHandle": "rayqueue.handle",
    "GroupHandle": "rayqueue.handle",
    "Chain": "rayqueue.workflow",
    "Group": "rayqueue.workflow",
    "chain": "rayqueue.workflow",
    "group": "rayqueue.workflow",
    "QueueEntry": "rayqueue.registry",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'rayqueue' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next lookup is a plain one
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = [
    # the client (on Ray)
    "init",
    "connect",
    "queues",
    "delete",
    "QueueEntry",
    "TaskQueue",
    "TaskHandle",
    "GroupHandle",
    "chain",
    "group",
    "Chain",
    "Group",
    "ClaimedTask",
    "PoolConfig",
    "TaskInfo",
    "TaskPage",
    "AttemptInfo",
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
    "function_task",
    "FunctionTask",
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
    "InvalidLimitError",
    "InvalidWorkflowError",
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
    "PurgeRefusedError",
    "StaleLeaseError",
    "QueueLostError",
    "QueueUnavailableError",
    "QueueNotFoundError",
    "QueueRunningError",
    "ClusterNotFoundError",
    "AmbiguousClusterError",
    "ResultTimeoutError",
    "InvalidArgumentError",
    "InvalidArgumentTypeError",
    "InvalidNameError",
    "StorageError",
    "StorageBusyError",
    "StorageFullError",
    "JournalNotFoundError",
    "JournalCorruptError",
    "JournalFencedError",
]
