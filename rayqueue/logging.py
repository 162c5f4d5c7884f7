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

from loguru import logger

_FORMAT = (
    "<green>{time:HH:mm:ss.SSS}</green> <level>{level: <7}</level> "
    "<cyan>{extra[component]}</cyan> {message} <dim>{extra}</dim>"
)


_DEBUG = False


def debug_enabled() -> bool:
    """Whether per-task DEBUG records are wanted (checked before building them)."""
    return _DEBUG


def configure(
    component: str = "driver", level: str | None = None, json: bool | None = None
) -> None:
    """Send rayqueue's logs to stderr, once per process (driver or actor).

    Args:
        component: who logs (``queue``, ``worker``, ``pool``, ``metrics``, ``driver``).
        level: minimum level; default ``RAYQUEUE_LOG_LEVEL`` or ``INFO``.
        json: one JSON object per line; default ``RAYQUEUE_LOG_JSON`` == ``1``.
    """
    level = level or os.environ.get("RAYQUEUE_LOG_LEVEL", "INFO")
    if json is None:
        json = os.environ.get("RAYQUEUE_LOG_JSON", "0") == "1"
    global _DEBUG
    _DEBUG = logger.level(level).no <= logger.level("DEBUG").no
    logger.remove()
    logger.configure(extra={"component": component})
    if json:
        logger.add(sys.stderr, level=level, serialize=True, enqueue=False)
    else:
        logger.add(sys.stderr, level=level, format=_FORMAT, enqueue=False)
