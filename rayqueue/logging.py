"""Logging setup: loguru sinks are added here, never at import.

Lifecycle records carry a stable ``action`` (``task_enqueued``, ``task_started``,
``task_succeeded``, ``task_failed``, ``task_retry_scheduled``, ``task_dead``,
``worker_started``, ``worker_lost``, ``pool_scaled``...) plus ids in ``extra``; tests and
log pipelines filter on it. Per-task records are DEBUG so that the hot path pays only a
level check unless asked for.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from loguru import logger

_FORMAT = (
    "<green>{time:HH:mm:ss.SSS}</green> <level>{level: <7}</level> "
    "<cyan>{extra[component]}</cyan> {message} <dim>{extra}</dim>"
)


_DEBUG = False
_LIFECYCLE: str | None = None


def debug_enabled() -> bool:
    """Whether DEBUG records are wanted (checked before building costly ones)."""
    return _DEBUG


def lifecycle_level() -> str | None:
    """The level per-task lifecycle records are logged at, or None when they would be
    filtered out anyway (the hot path then builds nothing).

    ``RAYQUEUE_LIFECYCLE_LEVEL`` sets it (default ``DEBUG``): ``INFO`` logs every
    enqueue, start and success at the default level.
    """
    return _LIFECYCLE


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
    per-task records (see :func:`lifecycle_level`).
    """
    level = level or os.environ.get("RAYQUEUE_LOG_LEVEL", "INFO")
    if json is None:
        json = os.environ.get("RAYQUEUE_LOG_JSON", "0") == "1"
    lifecycle = os.environ.get("RAYQUEUE_LIFECYCLE_LEVEL", "DEBUG").upper()
    global _DEBUG, _LIFECYCLE
    _DEBUG = logger.level(level).no <= logger.level("DEBUG").no
    _LIFECYCLE = lifecycle if logger.level(lifecycle).no >= logger.level(level).no else None
    logger.remove()
    logger.configure(extra={"component": component})
    sinks: list[Any] = [sys.stderr]
    path = os.environ.get("RAYQUEUE_LOG_FILE")
    if path:
        sinks.append(path)  # every process appends its own lines to the same file
    for sink in sinks:
        if json:
            logger.add(sink, level=level, serialize=True, enqueue=False)
        else:
            logger.add(sink, level=level, format=_FORMAT, enqueue=False,
                       colorize=False if sink is not sys.stderr else None)
