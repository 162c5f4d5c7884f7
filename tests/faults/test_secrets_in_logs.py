"""Issue 13, build 3: logs never leak data, also when things go wrong.

A task carries a secret in its payload and another in a header. A middleware raises in
the driver (``before_enqueue``, whose message holds the task) and on the worker
(``before_attempt``, whose attempt holds the headers): each logs an ERROR with a
traceback, where loguru's ``diagnose`` would print those locals. The task's first
attempt raises with the secret in a local variable; its second is leased when the queue
actor is SIGKILLed and restarts (workers and the pool manager see failed calls). Then
every file of this Ray session's logs and everything the driver printed are searched:
neither secret is anywhere, though the middleware's errors are.
"""

from __future__ import annotations

import io
import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any, ClassVar

import pytest
import ray
from loguru import logger

from rayqueue import PoolConfig, RetryPolicy, Task, testing
from rayqueue.middleware import Attempt, Message, Middleware
from rayqueue.task import current
from tests.faults.conftest import wait_gone
from tests.ray_fixtures import wait_for


class Nosy(Middleware):
    """Fails in the driver and on the worker, with data in its frames' locals."""

    def before_enqueue(self, message: Message) -> None:
        task = message.task  # noqa: F841 (a local for diagnose to print)
        raise RuntimeError("nosy middleware failed before enqueue")

    def before_attempt(self, attempt: Attempt) -> None:
        headers = dict(attempt.headers)  # noqa: F841
        raise RuntimeError("nosy middleware failed before attempt")


class Charge(Task[int]):
    """Fails its first attempt; the second waits for ``marker`` (at most 60 s)."""

    retry: ClassVar[RetryPolicy] = RetryPolicy(max_attempts=3, base_delay=0.05, jitter=False)

    card: str
    marker: str

    def execute(self) -> int:
        ctx = current()
        assert ctx is not None
        card = self.card
        if ctx.attempt == 1:
            raise RuntimeError("card declined")
        end = time.monotonic() + 60
        while not os.path.exists(self.marker) and time.monotonic() < end:
            time.sleep(0.02)
        return len(card)


def _run(q: Any, card: str, token: str, marker: str) -> None:
    handle = q.enqueue(Charge(card=card, marker=marker), headers={"auth": token},
                       wait=True)
    wait_for(lambda: (i := q.get(handle.id)).attempts == 2 and i.state == "leased",
             what="the second attempt running")
    pid = testing.queue_pid(q)
    os.kill(pid, signal.SIGKILL)
    wait_gone([pid], what="the queue actor's process")  # the fault happened...
    wait_for(lambda: testing.queue_pid(q) != pid, what="a new queue actor")  # ...and passed
    Path(marker).touch()
    assert handle.result(timeout=60) == len(card)
    info = q.get(handle.id)
    assert info.attempts == 2 and info.headers == {"auth": token}


def test_no_secret_reaches_any_log(make_queue: Any, tmp_path: Path,
                                   capfd: pytest.CaptureFixture[str]) -> None:
    card = "card-" + uuid.uuid4().hex
    token = "token-" + uuid.uuid4().hex
    marker = tmp_path / "go"
    q = make_queue(pools=[PoolConfig(min_workers=1, max_workers=1, concurrency=1)],
                   middleware=[Nosy()], heartbeat_s=0.5)
    # The driver's loguru is the application's: render its records as loguru's default
    # handler does (diagnose and backtrace on), whatever handlers other tests left.
    rendered = io.StringIO()
    sink = logger.add(rendered, level="DEBUG", diagnose=True, backtrace=True, colorize=False)
    try:
        _run(q, card, token, str(marker))
    finally:
        logger.remove(sink)
    logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs"
    driver = "".join(capfd.readouterr()) + rendered.getvalue()
    # The logs searched are the ones written: the middleware's errors are in them.
    assert "nosy middleware failed before enqueue" in driver
    wait_for(lambda: any(b"nosy middleware failed before attempt" in p.read_bytes()
                         for p in logs.rglob("*.err")), what="the worker's error in its log")
    for secret in (card, token):
        assert secret not in driver
        leaks = [p.name for p in logs.rglob("*") if p.is_file() and secret.encode() in
                 p.read_bytes()]
        assert leaks == [], f"{secret} in {leaks}"
