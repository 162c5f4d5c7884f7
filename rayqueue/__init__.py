"""rayqueue: a typed, prioritized, scheduled, durable task queue on Ray's actor model."""

from rayqueue.core.clock import Clock, FakeClock, SystemClock
from rayqueue.core.priority import PRIORITY_MAX, PRIORITY_MIN, Priority
from rayqueue.core.queue import Failure, Lease, Outcome, QueueConfig, QueueCore, TickReport
from rayqueue.core.record import ErrorInfo, NewTask, ScheduleRecord, TaskRecord, TaskState
from rayqueue.core.retry import Retry, RetryPolicy
from rayqueue.core.scaling import ScalingConfig, ScalingDecision, ScalingPolicy
from rayqueue.core.schedule import CronSpec, IntervalSpec, MisfirePolicy
from rayqueue.core.stats import QueueStats
from rayqueue.errors import (
    DuplicateTaskError,
    InvalidPayloadError,
    InvalidPriorityError,
    InvalidScheduleError,
    InvalidStateError,
    PayloadTooLargeError,
    QueueClosedError,
    QueueError,
    QueueFullError,
    QueueUnavailableError,
    RayQueueError,
    ResultTimeoutError,
    StaleLeaseError,
    StorageError,
    TaskError,
    TaskFailedError,
    TaskNotFoundError,
    UnknownTaskError,
    WorkerError,
)
from rayqueue.storage import InMemoryStorage, Storage
from rayqueue.task import Task, lookup, register

__all__ = [
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
    "Storage",
    "InMemoryStorage",
    # errors
    "RayQueueError",
    "TaskError",
    "UnknownTaskError",
    "InvalidPayloadError",
    "PayloadTooLargeError",
    "TaskFailedError",
    "QueueError",
    "InvalidPriorityError",
    "InvalidScheduleError",
    "QueueFullError",
    "QueueClosedError",
    "DuplicateTaskError",
    "TaskNotFoundError",
    "InvalidStateError",
    "StaleLeaseError",
    "QueueUnavailableError",
    "ResultTimeoutError",
    "StorageError",
    "WorkerError",
]
