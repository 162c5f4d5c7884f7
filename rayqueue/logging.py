"""Logging setup: loguru sinks are added here, never at import.

Lifecycle records carry a stable ``action`` (``task_enqueued``, ``task_started``,
``task_succeeded``, ``task_failed``, ``task_retry_scheduled``, ``task_dead``,
``worker_started``, ``worker_lost``, ``pool_scaled``...) plus ids in ``extra``; tests and
log pipelines filter on it. Per-task records are DEBUG so that the hot path pays only a
level check unless asked for.
"""

from __future__ import annotations

import json as _json
import sys
import threading
import time
import traceback
from typing import Any, TextIO

from loguru import logger

from rayqueue import settings
from rayqueue.task import current

_FORMAT = (
    "<green>{time:HH:mm:ss.SSS}</green> <level>{level: <7}</level> "
    "<cyan>{extra[component]}</cyan> {message} <dim>{extra}</dim>"
)


def traceback_of(err: BaseException) -> str:
    """``err``'s traceback as the standard library prints it: frames and source lines,
    never local variables. Code that can run in the driver logs this text rather than
    ``logger.opt(exception=err)``: the driver's loguru belongs to the application, and
    its default handler prints every frame's locals (``diagnose``), payloads included.
    """
    return "".join(traceback.format_exception(type(err), err, err.__traceback__)).rstrip()


_LIFECYCLE: str | None = None


def lifecycle_level() -> str | None:
    """The level per-task lifecycle records are logged at, or None when they would be
    filtered out anyway (the hot path then builds nothing).

    ``RAYQUEUE_LIFECYCLE_LEVEL`` sets it (default ``DEBUG``): ``INFO`` logs every
    enqueue, start and success at the default level.
    """
    return _LIFECYCLE


class LifecycleLog:
    """Per-task lifecycle records (enqueued, started, succeeded, failed), batched.

    Thousands of these a second through loguru cost ~17 us each per sink, which more
    than halved throughput (bench W7). They are formatted here with one f-string (or
    one ``json.dumps``) in loguru's layout and written with one ``write`` per sink per
    batch; :meth:`flush` is called by the actor after each batch of work and at least
    every 50 ms. Every other record still goes through loguru.
    """

    def __init__(self, component: str, level: str, json: bool, streams: list[TextIO]) -> None:
        self.level = level
        self._component = component
        self._json = json
        self._streams = streams
        self._lines: list[str] = []
        self._head = f"{level: <7} {component} "
        self._lock = threading.Lock()  # runner threads emit while the loop flushes
        self._second = -1
        self._clock = ""

    def emit(self, message: str, action: str, **fields: object) -> None:
        """Add one record (written at the next flush)."""
        now = time.time()
        if self._json:
            self._append(_json.dumps({
                "time": now, "level": self.level, "component": self._component,
                "message": message, "action": action, **fields}) + "\n")
        else:
            second = int(now)
            if second != self._second:  # the clock text changes once a second
                self._second = second
                self._clock = time.strftime("%H:%M:%S", time.localtime(now))
            extra = ", ".join([f"'{k}': {v!r}" for k, v in fields.items()])
            self._append(f"{self._clock}.{int((now - second) * 1000):03d} {self._head}"
                         f"{message} {{'action': '{action}', {extra}}}\n")
        if len(self._lines) >= 1_000:
            self.flush()

    def _append(self, line: str) -> None:
        with self._lock:
            self._lines.append(line)

    def flush(self) -> None:
        """Write what is buffered, one write per sink."""
        with self._lock:
            if not self._lines:
                return
            lines, self._lines = self._lines, []
            text = "".join(lines)
            self._write(text)

    def _write(self, text: str) -> None:
        for stream in self._streams:
            try:
                stream.write(text)
                stream.flush()
            except (OSError, ValueError):  # a full disk or closed stream loses log lines only
                pass


_LIFECYCLE_LOG: LifecycleLog | None = None


def _task_ids(record: Any) -> None:
    """Inside a task's attempt, every record carries its ``task_id`` and ``attempt``."""
    ctx = current()
    if ctx is not None:
        extra = record["extra"]
        extra.setdefault("task_id", ctx.task_id)
        extra.setdefault("attempt", ctx.attempt)


def lifecycle() -> LifecycleLog | None:
    """This process's lifecycle log, or None when lifecycle records are filtered out."""
    return _LIFECYCLE_LOG


def configure(
    component: str = "driver", level: str | None = None, json: bool | None = None
) -> None:
    """Send rayqueue's logs to stderr, once per process (driver or actor).

    Args:
        component: who logs (``queue``, ``worker``, ``pool``, ``metrics``, ``driver``).
        level: minimum level; default ``RAYQUEUE_LOG_LEVEL`` or ``INFO``.
        json: one JSON object per line; default ``RAYQUEUE_LOG_JSON`` == ``1``.

    ``RAYQUEUE_LOG_FILE`` adds a file every process appends to (as well as stderr,
    which Ray keeps in its session logs); ``RAYQUEUE_LIFECYCLE_LEVEL`` sets the level of
    per-task records (see :func:`lifecycle_level`), which go to that file when it is set
    and to stderr otherwise (not both: they are the high-volume stream).
    """
    env = settings.log_settings()
    level = level or env.level
    if json is None:
        json = env.json
    lifecycle = env.lifecycle
    global _LIFECYCLE
    _LIFECYCLE = lifecycle if logger.level(lifecycle).no >= logger.level(level).no else None
    logger.remove()
    logger.configure(extra={"component": component}, patcher=_task_ids)
    sinks: list[Any] = [sys.stderr]
    path = env.file
    if path:
        sinks.append(path)  # every process appends its own lines to the same file
    # Tracebacks never show local variables (diagnose) nor frames above the catch
    # (backtrace): locals hold payloads, results and credentials.
    safe: dict[str, Any] = {"diagnose": False, "backtrace": False}
    for sink in sinks:
        if json:
            logger.add(sink, level=level, serialize=True, enqueue=False, **safe)
        else:
            logger.add(sink, level=level, format=_FORMAT, enqueue=False,
                       colorize=False if sink is not sys.stderr else None, **safe)
    global _LIFECYCLE_LOG
    _LIFECYCLE_LOG = None if _LIFECYCLE is None else LifecycleLog(
        component, _LIFECYCLE, json,
        # The lifecycle stream is the high-volume one: it goes to the log file when one
        # is set (opened for the life of the process, as loguru's sink is), else stderr.
        [open(path, "a", encoding="utf-8") if path else sys.stderr])  # noqa: SIM115
