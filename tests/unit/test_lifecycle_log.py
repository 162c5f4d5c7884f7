"""The batched lifecycle log: loguru's layout (or flat JSON), one write per flush."""

from __future__ import annotations

import io
import json

import pytest

from rayqueue import logging as rq_logging
from rayqueue.logging import LifecycleLog


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def test_records_are_buffered_and_written_once_per_flush() -> None:
    a, b = CountingStream(), CountingStream()
    log = LifecycleLog("queue", "INFO", json=False, streams=[a, b])
    for i in range(3):
        log.emit("task enqueued", "task_enqueued", task_id=f"t{i}", priority=50)
    assert a.getvalue() == ""
    log.flush()
    log.flush()  # nothing left: no empty write
    lines = a.getvalue().splitlines()
    assert a.writes == 1 and b.getvalue() == a.getvalue()
    assert len(lines) == 3
    assert " INFO    queue task enqueued {'action': 'task_enqueued', 'task_id': 't0'" in lines[0]


def test_json_records_are_flat_objects() -> None:
    out = io.StringIO()
    log = LifecycleLog("worker", "INFO", json=True, streams=[out])
    log.emit("task started", "task_started", task_id="t1", attempt=2)
    log.flush()
    record = json.loads(out.getvalue())
    assert record["action"] == "task_started" and record["attempt"] == 2
    assert record["component"] == "worker" and record["level"] == "INFO"


def test_a_broken_stream_loses_log_lines_only() -> None:
    closed = io.StringIO()
    closed.close()
    good = io.StringIO()
    log = LifecycleLog("queue", "INFO", json=False, streams=[closed, good])
    log.emit("task succeeded", "task_succeeded", task_id="t")
    log.flush()
    assert "task_succeeded" in good.getvalue()


@pytest.mark.parametrize(("lifecycle", "level", "on"), [
    ("DEBUG", "INFO", False), ("INFO", "INFO", True), ("DEBUG", "DEBUG", True)])
def test_lifecycle_records_exist_only_when_they_pass_the_level(
        monkeypatch: pytest.MonkeyPatch, lifecycle: str, level: str, on: bool) -> None:
    monkeypatch.setenv("RAYQUEUE_LIFECYCLE_LEVEL", lifecycle)
    monkeypatch.delenv("RAYQUEUE_LOG_FILE", raising=False)
    try:
        rq_logging.configure("test", level=level)
        assert (rq_logging.lifecycle() is not None) is on
        assert (rq_logging.lifecycle_level() is not None) is on
    finally:
        monkeypatch.delenv("RAYQUEUE_LIFECYCLE_LEVEL")
        rq_logging.configure("test")


@pytest.mark.parametrize("json_lines", [False, True])
def test_tracebacks_never_show_local_variables(capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch,
                                               json_lines: bool) -> None:
    from loguru import logger

    monkeypatch.delenv("RAYQUEUE_LOG_FILE", raising=False)
    rq_logging.configure("test", json=json_lines)
    try:
        secret = "tok-" + "5ecret-in-a-local"
        try:
            payload = {"card": secret}
            _reject(payload)
        except ValueError:
            logger.opt(exception=True).error("task crashed", action="test_crash")
        err = capsys.readouterr().err
    finally:
        rq_logging.configure("test")
    assert "bad payload" in err  # the traceback itself is there
    assert secret not in err


def _reject(payload: dict[str, str]) -> None:
    raise ValueError("bad payload")
