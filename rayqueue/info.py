"""Public read models: what a client, CLI, notebook or dashboard is told about tasks."""

from __future__ import annotations

from pydantic import BaseModel

from rayqueue.core.record import Attempt, ScheduleRecord, TaskRecord
from rayqueue.core.schedule import IntervalSpec


class AttemptInfo(BaseModel):
    """One failed attempt of a task (``TaskInfo.history``): when it started and ended,
    ``failed`` (raised, or overran its timeout) or ``lost`` (its worker died), and its
    error (the message cut to 500 characters; the last error in full is on the task)."""

    number: int
    started_at: float | None
    ended_at: float
    outcome: str
    error_type: str
    message: str

    @classmethod
    def of(cls, a: Attempt) -> AttemptInfo:
        """Build from a core attempt."""
        return cls(number=a.number, started_at=a.started_at, ended_at=a.ended_at,
                   outcome=a.outcome, error_type=a.error_type, message=a.message)


class TaskInfo(BaseModel):
    """A task as the queue knows it, for reading (never for changing it)."""

    id: str
    task_name: str
    state: str
    priority: int
    pool: str
    attempts: int
    lost_attempts: int
    created_at: float
    due_at: float
    started_at: float | None = None
    finished_at: float | None = None
    worker: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    traceback: str | None = None
    reason: str | None = None
    result_json: str | None = None
    payload_json: str
    schedule_id: str | None = None
    #: string metadata given at enqueue (trace context, correlation ids)
    headers: dict[str, str] = {}
    #: the last ``current().progress(fraction, message)`` of the running (or last)
    #: attempt, as the queue holds it in memory (``get``/``handle.info()`` only)
    progress: float | None = None
    progress_message: str | None = None
    #: its failed attempts, oldest first (the last 20); a successful last attempt is
    #: the task's own ``started_at`` .. ``finished_at``
    history: list[AttemptInfo] = []
    #: a listing's row (``TaskQueue.tasks``): payload, result and traceback left out
    #: (empty); ``get(id)`` has them
    brief: bool = False
    #: the workflow (chain, group, chord) this task is a step of, if any
    workflow: str | None = None
    #: the steps it waits for (their results fill ``input_field``)
    parents: list[str] = []
    input_field: str | None = None

    @property
    def terminal(self) -> bool:
        """Whether the task has finished (succeeded, dead or cancelled; a ``pending``
        workflow step has not started)."""
        return self.state in ("succeeded", "dead", "cancelled")

    @classmethod
    def of(cls, rec: TaskRecord) -> TaskInfo:
        """Build from a core record."""
        err = rec.error
        step = rec.step
        return cls(
            id=rec.id,
            task_name=rec.task_name,
            state=rec.state.value,
            priority=rec.priority,
            pool=rec.pool,
            attempts=rec.attempts,
            lost_attempts=rec.lost_attempts,
            created_at=rec.created_at,
            due_at=rec.due_at,
            started_at=rec.started_at,
            finished_at=rec.finished_at,
            worker=rec.worker,
            error_type=err.type if err else None,
            error_message=err.message if err else None,
            traceback=err.traceback if err else None,
            reason=rec.reason,
            result_json=rec.result,
            payload_json=rec.payload,
            schedule_id=rec.schedule_id,
            headers=rec.headers or {},
            history=[AttemptInfo.of(a) for a in rec.history or ()],
            workflow=None if step is None else step.workflow,
            parents=[] if step is None else list(step.parents),
            input_field=None if step is None else step.feed,
        )

    @classmethod
    def brief_of(cls, rec: TaskRecord) -> TaskInfo:
        """A listing's row: the record without payload, result and traceback."""
        return cls.of(rec.evolve(payload="", result=None, error=None if rec.error is None
                                 else type(rec.error)(rec.error.type, rec.error.message))
                      ).model_copy(update={"brief": True})


class TaskPage(BaseModel):
    """A page of ``TaskQueue.tasks``: rows newest first, and the cursor of the next page
    (``None``: no older task is left). A page may hold fewer rows than asked, even none,
    while ``next`` is set: each page examines a bounded number of tasks."""

    tasks: list[TaskInfo]
    next: str | None = None


class ScheduleInfo(BaseModel):
    """A periodic schedule as the queue knows it (``TaskQueue.schedules()``)."""

    id: str
    task_name: str
    #: ``every 60s`` or ``cron 0 9 * * MON (Europe/Berlin)``
    trigger: str
    #: when it next creates a run (epoch seconds; not while paused)
    next_run: float | None
    #: when it last created one (epoch seconds), if ever
    last_run: float | None = None
    runs: int = 0
    priority: int
    pool: str
    #: why it creates no runs now (e.g. its task type is unknown on the workers)
    paused_reason: str | None = None

    @property
    def paused(self) -> bool:
        """Whether it creates no runs now."""
        return self.paused_reason is not None

    @classmethod
    def of(cls, rec: ScheduleRecord) -> ScheduleInfo:
        """Build from a core schedule record."""
        spec = rec.spec
        trigger = (f"every {spec.every:g}s" if isinstance(spec, IntervalSpec)
                   else f"cron {spec.expr} ({spec.tz})")
        return cls(id=rec.id, task_name=rec.task_name, trigger=trigger,
                   next_run=None if rec.paused_reason else rec.next_due,
                   last_run=rec.last_run, runs=rec.runs, priority=rec.priority,
                   pool=rec.pool, paused_reason=rec.paused_reason)


class WorkerInfo(BaseModel):
    """One worker actor as its pool manager sees it."""

    id: str
    pool: str
    state: str  # starting | running | draining
    node_id: str | None = None
    pid: int | None = None
    started_at: float
    #: tasks it holds leases on (running or prefetched); 0 = idle
    tasks: int = 0

    @property
    def activity(self) -> str:
        """``busy``, ``idle``, ``starting`` or ``draining``: what a dashboard shows."""
        if self.state == "running":
            return "busy" if self.tasks else "idle"
        return self.state


class PoolInfo(BaseModel):
    """A pool's size and demand at one moment."""

    name: str
    workers: int
    desired: int
    ready: int
    leased: int
    min_workers: int
    max_workers: int
    deaths: int = 0
    #: why no node of the cluster can host this pool's workers (None: some node can)
    infeasible: str | None = None


class FailureInfo(BaseModel):
    """One failed attempt, as dashboards list them."""

    at: float
    task_id: str
    task: str
    #: retried, dead, lost, timed_out, or cancelled (a workflow step after a failed one)
    outcome: str
    #: the task's state after it (failed = a retry is due, dead, ready...)
    state: str
    error_type: str
    message: str
    attempt: int


class MetricsSnapshot(BaseModel):
    """What the metrics actor has aggregated, for the CLI, notebooks and dashboards."""

    queue: str
    taken_at: float
    #: finished tasks per task name, then outcome (succeeded, retried, dead, lost, ...)
    counts: dict[str, dict[str, int]]
    #: enqueued tasks per task name
    enqueued: dict[str, int]
    #: tasks finished per second over the sliding window, by outcome
    rates: dict[str, float]
    window_s: float
    #: success share of finished attempts in the window (None when none finished)
    success_ratio: float | None
    #: histogram bucket upper bounds (seconds) and counts, plus sums
    wait_buckets: list[float]
    wait_counts: list[int]
    run_counts: list[int]
    wait_sum: float
    run_sum: float
    #: queue depth by state, and ready tasks by pool then priority
    depth: dict[str, int]
    ready_by_priority: dict[str, dict[int, int]]
    pools: list[PoolInfo]
    workers: list[WorkerInfo]
    #: worker count over time: (time, pool, workers) samples
    worker_history: list[tuple[float, str, int]]
    #: the latest failed attempts, newest first
    recent_failures: list[FailureInfo] = []
    #: queue-actor calls served and the tasks they carried, by kind (``enqueue``,
    #: ``claim``, ``report``): items / calls is the batch size batching achieved
    calls: dict[str, tuple[int, int]] = {}
    #: the journal's commits are failing (on any shard), and because a disk is full
    journal_failing: bool = False
    storage_full: bool = False
