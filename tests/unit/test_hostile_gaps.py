"""What the audit that closed issue 14 found uncovered or unmet, pinned without Ray:
``init`` takes any object as its clock (a new queue's actor then failed to start, as a
Ray error turned QueueLostError); an actor that refuses the journal it was given (another
queue owns it; its shard layout differs) came back as QueueLostError or a plain
``ValueError``; ``ClaimedTask.ack`` of NaN or infinity (finding 6) and the dashboard's
constant-time token comparison on bytes (build 7) had no test of their own."""

from __future__ import annotations

import hmac
import math
import time
from pathlib import Path
from typing import Any, ClassVar

import pytest
import ray

import rayqueue
from rayqueue import (
    FakeClock,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    InvalidNameError,
    InvalidResultError,
    InvalidWorkflowError,
    QueueLostError,
    Task,
    bootstrap,
    calls,
)
from rayqueue.core.lease import Lease
from rayqueue.errors import JournalCorruptError, JournalInUseError, StorageBusyError
from rayqueue.handle import ClaimedTask
from rayqueue.task import to_new_task


class ReachedRay(Exception):
    """The call passed every check and would now start or join Ray."""


@pytest.fixture
def no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    def tripwire(*args: object) -> None:
        raise ReachedRay

    monkeypatch.setattr(bootstrap, "_ensure_ray", tripwire)


# ------------------------------------------------------------- build 2: init(clock=)
@pytest.mark.parametrize("clock", [5, "now", object(), FakeClock, math.nan])
def test_a_clock_without_now_is_refused_before_ray(no_ray: None, clock: object) -> None:
    with pytest.raises(InvalidArgumentTypeError, match="clock"):
        rayqueue.init("gaps", clock=clock)  # type: ignore[arg-type]


@pytest.mark.parametrize("clock", [None, FakeClock(), rayqueue.SystemClock()])
def test_a_clock_with_now_passes(no_ray: None, clock: Any) -> None:
    with pytest.raises(ReachedRay):
        rayqueue.init("gaps", clock=clock)


# ------------------------------------- build 3: the actor's refusal, as init shows it
def _init_failed(last_lines: str) -> ray.exceptions.RayActorError:
    """What Ray raises when a queue actor's constructor raised (its traceback text)."""
    return ray.exceptions.RayActorError(
        error_msg="The actor died because of an error raised in its creation task, "
                  "ray::q.queue-0:QueueActor.__init__() (pid=1, ip=127.0.0.1)\n"
                  '  File "rayqueue/actors/queue.py", line 1, in __init__\n' + last_lines,
        actor_init_failed=True)


def test_a_journal_another_queue_owns_comes_back_as_journal_in_use_naming_it() -> None:
    owner = "queue 'main' (pid 4242 on box, since 2026-12-02T04:06:00Z)"
    text = f"rayqueue.errors.JournalInUseError: {JournalInUseError('/j/main.sqlite', owner)}"
    err = calls._translate(_init_failed(text))
    assert isinstance(err, JournalInUseError) and isinstance(err, StorageBusyError)
    assert err.path == "/j/main.sqlite" and err.owner == owner
    assert "pid 4242" in str(err)


def test_a_journal_in_use_is_not_waited_on_as_a_busy_journal() -> None:
    """Retrying cannot free a journal another live queue holds: init says so at once."""
    budget = calls._Budget(60.0, 0.0)
    with pytest.raises(JournalInUseError):
        budget.after(time.monotonic(), JournalInUseError("/j", "queue 'main'"))
    assert budget.after(time.monotonic(), StorageBusyError("busy")) > 0  # retried


def test_a_setting_the_actor_refuses_is_an_argument_error_not_a_plain_value_error() -> None:
    err = calls._translate(_init_failed(
        "ValueError: the journals at '/j/x.sqlite' are already written for 2 shards"))
    assert isinstance(err, InvalidArgumentError) and isinstance(err, ValueError)
    assert "already written for 2 shards" in str(err)


def test_an_actor_that_failed_otherwise_is_still_lost() -> None:
    err = calls._translate(_init_failed("RuntimeError: something else"))
    assert isinstance(err, QueueLostError) and "something else" in str(err)


# ------------------------------------------- finding 6: ack of NaN or infinity
class Anything(Task[Any]):
    task_name: ClassVar[str] = "tests.gaps.anything"

    def execute(self) -> Any:
        return None


def _claim(sent: list[Any]) -> ClaimedTask[Anything]:
    new = to_new_task(Anything())
    lease = Lease("a", 1, Anything.task_name, new.payload, 1, 50, "default", 0.0, None,
                  Anything.retry)
    return ClaimedTask(lease, Anything(), lambda outcome: bool(sent.append(outcome)) or True,
                       lambda task_id, token: True)


@pytest.mark.parametrize("result", [math.nan, math.inf, -math.inf, {"v": math.nan},
                                    [1.0, math.inf]])
def test_ack_of_nan_or_infinity_is_refused_not_sent_as_null(result: Any) -> None:
    sent: list[Any] = []
    claim = _claim(sent)
    with pytest.raises(InvalidResultError, match="not a JSON value"):
        claim.ack(result)
    assert sent == [] and claim.state == "leased"  # nothing reached the queue
    assert claim.ack({"v": 1.5}) is True and sent[0].result == '{"v":1.5}'


# --------------------------------------- build 7: the token compared on bytes, in time
def test_the_dashboard_compares_the_token_in_constant_time_on_bytes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from rayqueue import dashboard
    from tests.unit.test_dashboard import StubQueue, request

    seen: list[tuple[Any, Any]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        seen.append((a, b))
        return real(a, b)

    monkeypatch.setattr(dashboard.hmac, "compare_digest", spy)
    queue = StubQueue()
    dash = dashboard.serve(queue, port=0)  # type: ignore[arg-type]
    try:
        port = dash.server.server_address[1]
        token = dash.server.RequestHandlerClass.token  # type: ignore[attr-defined]
        wrong = request(port, "POST", "/api/pause", {"X-RQ-Token": token[:-1] + "x"})
        right = request(port, "POST", "/api/pause", {"X-RQ-Token": token})
    finally:
        queue.release.set()
        dash.stop()
    assert (wrong.status, right.status) == (403, 200)
    assert len(seen) == 2 and all(isinstance(a, bytes) and isinstance(b, bytes)
                                  for a, b in seen)
    assert seen[1] == (token.encode(), token.encode())



# ------------------------------------------- build 2: delete(journal=), group(...)
@pytest.mark.parametrize("journal", ["a\x00b", "lone\ud800", ""])
def test_delete_refuses_a_journal_path_the_os_cannot_name_before_anything(
        monkeypatch: pytest.MonkeyPatch, journal: str) -> None:
    def tripwire(*args: object) -> None:
        raise ReachedRay

    monkeypatch.setattr(bootstrap, "_attach", tripwire)
    with pytest.raises(InvalidArgumentError, match="journal"):
        rayqueue.delete("gaps", journal=journal)


@pytest.mark.parametrize("tasks", [None, 5, print, 1.5])
def test_a_group_of_something_not_iterable_is_a_workflow_error(tasks: Any) -> None:
    with pytest.raises(InvalidWorkflowError, match="iterable"):
        rayqueue.group(tasks)


# --------------- found by the CLI suite at 1,000 examples: names and paths from argv
def test_a_task_name_no_key_can_hold_is_refused_before_the_cluster_is_asked(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``rayqueue enqueue $'\\xff' '{}'``: the undecodable byte arrives as a lone
    surrogate, which the shipped-class lookup sent to Ray's KV store as a key
    (UnicodeEncodeError)."""
    from ray.experimental import internal_kv

    from rayqueue import codebook

    def tripwire(*args: object, **kwargs: object) -> None:
        raise ReachedRay

    monkeypatch.setattr(internal_kv, "_internal_kv_get", tripwire)
    for name in ("\udcff", "a\x00b", ""):
        with pytest.raises(InvalidNameError, match="task name"):
            codebook.resolve("q", name)


@pytest.mark.parametrize("argv", [
    ["journal", "backup", "/tmp/x\udd00.sqlite", "--journal", "/tmp/j.sqlite"],
    ["journal", "check", "--journal", "/tmp/j\udd00.sqlite"],
    ["journal", "restore", "/tmp/b.sqlite", "--journal", "/tmp/a\x00b"],
    ["reshard", "--shards", "2", "--journal", "/tmp/\ud800"],
    ["delete", "q", "--journal", "/tmp/\udfff", "--yes"],
])
def test_a_journal_path_the_os_cannot_name_is_a_usage_error(
        capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    from rayqueue.cli import EXIT_USAGE, main

    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == EXIT_USAGE
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "file name" in err or "NUL" in err, err


def test_a_backup_of_a_directory_is_a_journal_error_not_an_io_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``rayqueue journal backup FILE --journal <a directory>`` (found by the CLI suite
    at 1,000 examples): SQLite's "disk I/O error" escaped as an unexpected error."""
    from rayqueue.cli import EXIT_FAILED, main
    from rayqueue.storage.maintenance import backup

    (tmp_path / "dir").mkdir()
    with pytest.raises(JournalCorruptError, match="not a file"):
        backup(tmp_path / "dir", tmp_path / "copy.sqlite")
    assert main(["journal", "backup", str(tmp_path / "copy.sqlite"), "--journal",
                 str(tmp_path / "dir")]) == EXIT_FAILED
    err = capsys.readouterr().err
    assert err.startswith("rayqueue: JournalCorruptError:") and len(err.splitlines()) == 1
    assert not (tmp_path / "copy.sqlite").exists()
