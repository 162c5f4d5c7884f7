"""How task and schedule records become SQLite rows and back (JSON text, never pickles)."""

from __future__ import annotations

import json
from typing import Any

from loguru import logger

from rayqueue.core.priority import PRIORITY_MAX, PRIORITY_MIN, Priority
from rayqueue.core.record import ErrorInfo, ScheduleRecord, TaskRecord, TaskState, dumps


def text_of(raw: bytes) -> str | bytes:
    """SQLite text as str, or the raw bytes when it is not UTF-8."""
    # Text that is not UTF-8 comes back as bytes, so one bad row cannot fail a whole load.
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw


def row_of_task(rec: TaskRecord) -> tuple[str, str, str, str, str]:
    """The ``tasks`` row of a record: id, task name, state, payload, the rest as JSON."""
    data = rec.to_json()
    del data["payload"]
    return rec.id, rec.task_name, rec.state.value, rec.payload, dumps(data)


def task_of_row(row: tuple[Any, ...]) -> TaskRecord | None:
    """The record of a ``tasks`` row (id, task name, payload, record); an undecodable
    row comes back dead (``corrupt_record``) when its id, name and payload read, else None."""
    task_id, task_name, payload, record = row
    readable = all(isinstance(v, str) for v in (task_id, task_name, payload))
    data: Any = None
    try:
        data = json.loads(record)
        if not readable or data["id"] != task_id:
            raise ValueError("the id, task_name or payload column is not valid text")
        return TaskRecord.from_json({**data, "payload": payload})
    except Exception as err:  # any decoding problem: recovery goes on without the row
        logger.bind(action="journal_row_invalid", table="tasks", task_id=task_id).warning(
            "undecodable journal row {!r} ({}: {}); {}", task_id, type(err).__name__, err,
            "loaded as dead (corrupt_record)" if readable else "skipped",
        )
        if not readable:
            return None
        return _corrupt(task_id, task_name, payload, data if isinstance(data, dict) else {}, err)


def _corrupt(
    task_id: str, task_name: str, payload: str, data: dict[str, Any], err: Exception
) -> TaskRecord:
    """A dead record for a row that does not decode, with what fields still can be read."""

    def get(key: str, kind: type[Any], default: Any) -> Any:
        value = data.get(key)
        return value if type(value) is kind else default

    priority = get("priority", int, Priority.NORMAL)
    updated = get("updated_at", float, 0.0)
    return TaskRecord(
        id=task_id,
        task_name=task_name,
        payload=payload,
        priority=priority if PRIORITY_MIN <= priority <= PRIORITY_MAX else Priority.NORMAL,
        pool=get("pool", str, "default"),
        state=TaskState.DEAD,
        seq=get("seq", int, 0),
        created_at=get("created_at", float, 0.0),
        due_at=get("due_at", float, 0.0),
        updated_at=updated,
        finished_at=updated,
        error=ErrorInfo.of("CorruptRecord", f"journal row could not be decoded: {err!r}"),
        reason="corrupt_record",
    )


def schedule_of_row(row: tuple[Any, ...]) -> ScheduleRecord | None:
    """The schedule of a ``schedules`` row (id, record), or None if it does not decode."""
    schedule_id, record = row
    try:
        return ScheduleRecord.from_json(json.loads(record))
    except Exception as err:  # no dead state for schedules: skip it, loudly
        log = logger.bind(action="journal_row_invalid", table="schedules", schedule_id=schedule_id)
        log.warning("undecodable schedule row {!r} skipped ({!r})", schedule_id, err)
        return None

