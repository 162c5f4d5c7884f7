"""Every environment variable rayqueue reads, each read in one place with its default.

As Ray Serve's ``constants.py`` does: modules ask for a setting by name here, never
``os.environ`` themselves. Settings that only matter to a process's start (logging, the
journal's directory) are read each time they are asked for; the crash-point hook, which
sits on the queue actor's hot path, is read once per process.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass

from rayqueue.errors import InvalidArgumentError

#: Where journals go unless told (under the driver's working directory).
DEFAULT_HOME = ".rayqueue"


def home() -> str:
    """``RAYQUEUE_HOME``: the directory of default journals."""
    return os.environ.get("RAYQUEUE_HOME", DEFAULT_HOME)


def ray_address() -> str | None:
    """``RAY_ADDRESS``: set under ``ray job submit`` (the driver joins that cluster)."""
    return os.environ.get("RAY_ADDRESS") or None


def private_cluster_auth() -> None:
    """For a private throwaway local Ray: token auth off, unless the caller chose."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")


@functools.cache
def answer_timeout_s() -> float:
    """``RAYQUEUE_ANSWER_TIMEOUT_S``: how long a call between rayqueue's processes waits
    for an answer, beyond what it may rightly park, before it counts the request or its
    reply as lost and retries (30 s). Read once per process; Ray's workers inherit it
    from the process that started the cluster. Lower it where replies are lost often."""
    text = os.environ.get("RAYQUEUE_ANSWER_TIMEOUT_S", "30")
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise InvalidArgumentError("RAYQUEUE_ANSWER_TIMEOUT_S",
                                   f"a finite number of seconds > 0, not {text!r}")
    return value


def ray_auth_mode() -> str | None:
    """``RAY_AUTH_MODE`` as this process sees it (Ray reads it at import)."""
    return os.environ.get("RAY_AUTH_MODE")


@dataclass(frozen=True)
class LogSettings:
    """How ``rayqueue.logging.configure`` sets up a process's sink."""

    #: ``RAYQUEUE_LOG_LEVEL``: the sink's level
    level: str
    #: ``RAYQUEUE_LOG_JSON=1``: one JSON object a line
    json: bool
    #: ``RAYQUEUE_LIFECYCLE_LEVEL``: the level of per-task lifecycle lines
    lifecycle: str
    #: ``RAYQUEUE_LOG_FILE``: a file to log to instead of stderr
    file: str | None


def log_settings() -> LogSettings:
    """The logging settings of this process."""
    return LogSettings(level=os.environ.get("RAYQUEUE_LOG_LEVEL", "INFO"),
                       json=os.environ.get("RAYQUEUE_LOG_JSON", "0") == "1",
                       lifecycle=os.environ.get("RAYQUEUE_LIFECYCLE_LEVEL", "DEBUG").upper(),
                       file=os.environ.get("RAYQUEUE_LOG_FILE"))


@dataclass(frozen=True)
class CrashPoint:
    """The test hook that exits the queue actor at a named point (see
    ``rayqueue.actors.journal.crashpoint``); tests set it through ``queue_env``."""

    #: ``RAYQUEUE_CRASHPOINT``: the point's name (None: the hook is off)
    name: str | None
    #: ``RAYQUEUE_CRASHPOINT_AFTER``: fire on this pass
    after: int
    #: ``RAYQUEUE_CRASHPOINT_ONCE``: a marker file; fire only if it does not exist yet
    once: str | None


@functools.cache
def crash_point() -> CrashPoint:
    """This process's crash point, read once (the hook is asked on every call)."""
    return CrashPoint(name=os.environ.get("RAYQUEUE_CRASHPOINT"),
                      after=int(os.environ.get("RAYQUEUE_CRASHPOINT_AFTER", "1")),
                      once=os.environ.get("RAYQUEUE_CRASHPOINT_ONCE"))


def storage_faults() -> str | None:
    """``RAYQUEUE_STORAGE_FAULTS``: faults to inject into the journal (test hook)."""
    return os.environ.get("RAYQUEUE_STORAGE_FAULTS")
