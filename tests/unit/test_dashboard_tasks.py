"""The dashboard's task browser, task view, schedules and SIGTERM, against a stub queue
whose records come from the real core (issue 16, item 9)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rayqueue import ErrorInfo, Failure, FakeClock, InMemoryStorage, QueueCore
from rayqueue.errors import InvalidArgumentError, TaskNotFoundError
from rayqueue.info import ScheduleInfo, TaskInfo, TaskPage
from tests.ports import free_port
from tests.unit.conftest import T0, new
from tests.unit.test_dashboard import Served, StubQueue, request

ROOT = Path(__file__).resolve().parents[2]


class BrowsedQueue(StubQueue):
    """A stub whose tasks come from a real core: one task failed once, then succeeded."""

    def __init__(self) -> None:
        super().__init__()
        clock = FakeClock(T0)
        core = self.core = QueueCore(storage=InMemoryStorage())
        core.enqueue(new("shop.payment", '{"order": "A-1"}', task_id="pay-1"), clock.now())
        (lease,) = core.claim("w1", 1, clock.now())
        clock.advance(1.5)
        core.fail("pay-1", lease.token, Failure(ErrorInfo("TimeoutError", "bank slow")),
                  clock.now())
        clock.advance(60)
        core.tick(clock.now())
        (lease,) = core.claim("w2", 1, clock.now())
        clock.advance(0.5)
        core.ack("pay-1", lease.token, '{"charged": 12}', clock.now())
        self.asked: list[dict[str, Any]] = []

    def tasks(self, **query: Any) -> TaskPage:
        self._call()
        self.asked.append(query)
        if query["priority"] is not None and not 0 <= query["priority"] <= 100:
            raise InvalidArgumentError("priority", "out of range")
        return TaskPage(tasks=[TaskInfo.brief_of(self.core.get("pay-1"))], next="7")

    def get(self, task_id: str) -> TaskInfo:
        self._call()
        if (rec := self.core.find(task_id)) is None:
            raise TaskNotFoundError(task_id)
        return TaskInfo.of(rec)

    def schedules(self) -> list[ScheduleInfo]:
        self._call()
        return [ScheduleInfo(id="nightly", task_name="shop.report", trigger="cron 0 3 * * *",
                             next_run=T0 + 3600, priority=50, pool="default"),
                ScheduleInfo(id="old", task_name="gone.task", trigger="every 60s",
                             next_run=None, priority=50, pool="default",
                             paused_reason="no class for task 'gone.task'")]


@pytest.fixture
def browsed() -> Iterator[Served]:
    from rayqueue.dashboard import serve

    queue = BrowsedQueue()
    dash = serve(queue, port=0)  # type: ignore[arg-type]
    try:
        yield Served(queue, dash, dash.server.server_address[1], "")
    finally:
        queue.release.set()
        dash.stop()


def test_the_task_list_passes_its_filters_to_the_queue(browsed: Served) -> None:
    reply = request(browsed.port, "GET",
                    "/api/tasks?state=succeeded&type=shop.payment&priority=50&id=pay&after=9")
    assert reply.status == 200
    assert reply.json()["next"] == "7"
    (row,) = reply.json()["tasks"]
    assert (row["id"], row["state"], row["attempts"]) == ("pay-1", "succeeded", 2)
    assert "payload_json" not in row  # a list row carries no payload
    assert browsed.queue.asked[-1] == {  # type: ignore[attr-defined]
        "state": "succeeded", "type": "shop.payment", "priority": 50, "id_prefix": "pay",
        "after": "9", "limit": 50}
    request(browsed.port, "GET", "/api/tasks")
    assert browsed.queue.asked[-1]["state"] is None  # type: ignore[attr-defined]


@pytest.mark.parametrize("priority", ["high", "101"])
def test_a_bad_filter_is_a_400_that_says_why(browsed: Served, priority: str) -> None:
    reply = request(browsed.port, "GET", f"/api/tasks?priority={priority}")
    assert reply.status == 400 and "priority" in reply.json()["error"]


def test_a_tasks_view_has_payload_attempts_result_and_timeline(browsed: Served) -> None:
    reply = request(browsed.port, "GET", "/api/tasks/pay-1")
    assert reply.status == 200
    task = reply.json()
    assert json.loads(task["payload_json"]) == {"order": "A-1"}
    assert json.loads(task["result_json"]) == {"charged": 12}
    assert [(a["number"], a["outcome"], a["error"]) for a in task["attempt_list"]] == [
        (1, "failed", "TimeoutError: bank slow"), (2, "succeeded", None)]
    first, second = task["attempt_list"]
    assert first["ended_at"] - first["started_at"] == pytest.approx(1.5)
    assert second["started_at"] == pytest.approx(T0 + 61.5)
    assert [e["what"] for e in task["timeline"]] == [
        "enqueued", "attempt 1 started", "attempt 1 failed", "attempt 2 started",
        "attempt 2 succeeded"]


def test_an_unknown_task_is_a_404(browsed: Served) -> None:
    reply = request(browsed.port, "GET", "/api/tasks/nope")
    assert reply.status == 404 and "nope" in reply.json()["error"]


def test_the_snapshot_lists_schedules_with_why_one_is_paused(browsed: Served) -> None:
    snap = request(browsed.port, "GET", "/api/snapshot").json()
    assert [(s["id"], s["paused"]) for s in snap["schedules"]] == [
        ("nightly", False), ("old", True)]
    assert "gone.task" in snap["schedules"][1]["paused_reason"]


def test_the_task_list_of_a_gone_queue_is_503(browsed: Served) -> None:
    browsed.queue.mode = "gone"
    for path in ("/api/tasks", "/api/tasks/pay-1"):
        reply = request(browsed.port, "GET", path)
        assert reply.status == 503 and "unreachable" in reply.json()["error"], path


#: How each way of serving is started in a process of its own: ``serve(block=True)``,
#: and the ``rayqueue dashboard`` command (attached to a stub instead of a cluster).
SERVERS = {
    "serve": "from rayqueue.dashboard import serve\n"
             "serve(StubQueue(), port={port}, block=True)\n",
    "cli": "from rayqueue import cli\n"
           "cli._connect = lambda args: StubQueue()\n"
           "code = cli.main(['dashboard', '--port', '{port}'])\n"
           "assert code == 0, code\n",
}


@pytest.mark.parametrize("how", sorted(SERVERS))
def test_sigterm_stops_a_blocking_dashboard_cleanly_and_frees_its_port(
        tmp_path: Path, how: str) -> None:
    """Issue 16, item 8: SIGTERM ended ``rayqueue dashboard`` with a fault dump."""
    port = free_port()
    script = tmp_path / "serve.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from tests.unit.test_dashboard import StubQueue
    """) + SERVERS[how].format(port=port) + 'print("returned", flush=True)\n')
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:  # serving once the page answers
            try:
                if request(port, "GET", "/").status == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the dashboard did not start"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-2000:]
    assert "returned" in out and "Traceback" not in err and "Fatal" not in err
    from rayqueue.dashboard import serve

    again = serve(StubQueue(), port=port)  # type: ignore[arg-type]
    again.stop()
