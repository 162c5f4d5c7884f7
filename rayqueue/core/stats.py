"""QueueStats: the structured answer to "what is in the queue"."""

from __future__ import annotations

from pydantic import BaseModel, Field


class QueueStats(BaseModel):
    """Counts of one queue at one moment."""

    #: tasks per state name (every state present, zero included)
    by_state: dict[str, int]
    #: ready tasks per pool, then per priority
    ready_by_priority: dict[str, dict[int, int]] = Field(default_factory=dict)
    #: unfinished tasks (what max_size bounds)
    size: int
    #: periodic schedules
    schedules: int = 0
    max_size: int | None = None
    closed: bool = False
    #: claims hand out nothing while paused (enqueues are still accepted)
    paused: bool = False
    #: the journal's last commit failed: changes are refused until one succeeds again
    journal_failing: bool = False
    #: ... because its disk (or size cap) is full
    storage_full: bool = False
    #: ready tasks held back by a rate or concurrency limit (or waiting for their
    #: key's turn); they are counted as ready in ``by_state`` too
    throttled: int = 0
    #: ... per task name
    throttled_by_task: dict[str, int] = Field(default_factory=dict)
