"""Hostile command lines against a real queue (issue 14, build 8): hypothesis builds
``rayqueue`` argv from hostile ids, numbers, names and paths and runs ``main()`` in this
process (as test_cli.py does; the session's Ray is the cluster it attaches to), plus a
few real processes for ``--address``, which only a fresh process resolves.

For each command line: exit 0 only where the command is valid, else 1, 2 or 3 with
exactly one line on stderr that is the CLI's own message or names an error of
rayqueue's tree (never a traceback, a plain ``ValueError`` or the "unexpected" line),
the queue's ``stats()`` is as it was, the command took under 5 s (a hang guard), and a
good task enqueued after it runs with its result. Journal commands get paths in a private
directory, plus the running queue's own journal, which they must refuse to replace.

``RAYQUEUE_HOSTILE_EXAMPLES`` sets the examples per test (default 20 -> 80 command lines,
in a few seconds; 1,000 -> 4,000 in a few minutes)."""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rayqueue
from rayqueue import PoolConfig, errors
from rayqueue.cli import main
from tests.integration import hostile_values as hv
from tests.integration.probe_tasks import Manual, Probe

PER_TEST = int(os.environ.get("RAYQUEUE_HOSTILE_EXAMPLES", "20"))
EXAMPLES = settings(max_examples=PER_TEST, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))
CODES: Counter[int] = Counter()
#: A hang guard, not a timing test: every command here answers at once or is refused.
HANG_S = 5.0
#: good tasks run after the hostile command lines
GOOD = [0]
#: what an error line may name: an error class of rayqueue's tree
NAMED = re.compile(r"^rayqueue: (?:unexpected )?([A-Za-z_][A-Za-z0-9_]*(?:Error|Exception)):")

#: argv words: printable text, control characters, surrogate escapes (undecodable argv
#: bytes arrive so), numbers in every spelling, option look-alikes.
words = st.one_of(
    hv.texts.filter(lambda t: not any(0xD800 <= ord(c) < 0xDC80 for c in t)),
    st.sampled_from(["-1", "0", "1", "65535", "65536", "99999", "-0", "1e3", "nan", "inf",
                     "-inf", "1_000", "0x10", " 7", "10" * 40, "3.5", "--", "-h", "--help",
                     "--queue", "-q", "\udcff", "x\udc80y", "demo", ".rel", "a..b"]),
    st.integers(-(10**30), 10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr))


@pytest.fixture(scope="module")
def cli_queue(ray_cluster: dict[str, Any],
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[rayqueue.TaskQueue[Any]]:
    path = tmp_path_factory.mktemp("hostile-cli") / "cli.sqlite"
    q = rayqueue.init(f"hcli-{uuid.uuid4().hex[:6]}", journal=str(path),
                      pools=[PoolConfig(min_workers=1, max_workers=1)])
    q.enqueue(Manual(name="resident"), wait=True)  # something a bad command could touch
    yield q
    print(f"\nhostile CLI suite: {CODES.total()} command lines, exit codes "
          f"{dict(sorted(CODES.items()))}; {GOOD[0]} good tasks after them all done")
    q.shutdown(timeout=10)


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as stop:  # argparse: usage errors, --help
            code = stop.code if isinstance(stop.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def judge(q: rayqueue.TaskQueue[Any], argv: list[str], *,
          may_act: bool = False) -> tuple[int, str]:
    before = q.stats()
    began = time.monotonic()
    code, out, err = run_cli(argv)
    took = time.monotonic() - began
    CODES[code] += 1
    shown = f"rayqueue {argv!r}"[:300]
    assert "Traceback" not in out + err, shown
    assert code in (0, 1, 2, 3), (shown, code, err)
    if code != 0:
        lines = err.strip().splitlines()
        assert len(lines) == 1, (shown, err[:2000])
        assert not lines[0].startswith("rayqueue: unexpected "), (shown, lines[0][:500])
        named = NAMED.match(lines[0])
        if named:
            cls = getattr(errors, named.group(1), None)
            assert isinstance(cls, type) and issubclass(cls, errors.RayQueueError), (
                shown, lines[0][:500])
    if code != 0 or not may_act:
        assert q.stats() == before, (shown, code, err[:500])
    assert took < HANG_S, (shown, f"took {took:.1f} s")
    # The queue still works: a good task enqueued after it runs, with its result.
    GOOD[0] += 1
    assert q.enqueue(Probe(value=GOOD[0])).result(timeout=30) == GOOD[0], shown
    return code, out


def _ids(draw: Any) -> list[str]:
    return draw(st.lists(words, min_size=1, max_size=3))


@EXAMPLES
@given(data=st.data())
def test_queue_commands(cli_queue: rayqueue.TaskQueue[Any], data: st.DataObject) -> None:
    q = cli_queue
    queue = data.draw(st.one_of(st.just(q.name), words), label="queue")
    address = data.draw(st.one_of(st.just("auto"), words), label="address")
    head = ["--address", address, "-q", queue]
    command = data.draw(st.sampled_from(["status", "dead", "retry", "cancel", "pools",
                                         "dashboard"]), label="command")
    argv: list[str]
    if command == "status":
        argv = [*head, "status"]
    elif command == "dead":
        argv = [*head, "dead", "--limit", data.draw(words, label="limit")]
    elif command in ("retry", "cancel"):
        argv = [*head, command, *data.draw(st.lists(words, min_size=1, max_size=3))]
    elif command == "pools":
        argv = [*head, "pools", "--resize",
                *data.draw(st.lists(st.one_of(st.just("default"), words), min_size=3,
                                    max_size=3), label="resize")]
    else:
        port = data.draw(words.filter(lambda p: not _a_port(p)), label="port")
        argv = [*head, "dashboard", "--port", port, "--host", "127.0.0.1"]
    code, _ = judge(q, argv, may_act=command == "pools")
    if command == "pools" and code == 0:
        q.resize_pool("default", 1, 1)  # (a valid resize: put the bounds back)


def _a_port(text: str) -> bool:
    try:
        return 1 <= int(text) <= 65535  # a valid one would serve until interrupted
    except ValueError:
        return False


@EXAMPLES
@given(data=st.data())
def test_enqueue_command(cli_queue: rayqueue.TaskQueue[Any], data: st.DataObject) -> None:
    q = cli_queue
    task = data.draw(st.one_of(st.just(Manual.task_name), words), label="task")
    payload = data.draw(st.one_of(
        hv.payload_texts, st.just('{"name": "ok"}'),
        st.builds(lambda d: "[" * d + "]" * d, st.integers(500, 5000))), label="payload")
    argv = ["-q", q.name, "enqueue", task, payload]
    for option in data.draw(st.lists(st.sampled_from(["--priority", "--delay", "--wait",
                                                      "--import"]), unique=True)):
        value = data.draw(words, label=option)
        if option == "--wait" and _short_wait(value) is not None:
            continue  # (a valid wait times out after the enqueue, which then stays)
        argv += [option, value]
    code, out = judge(q, argv, may_act=True)
    if code == 0 and not out.startswith("usage:"):  # enqueued: its id is printed first
        assert run_cli(["-q", q.name, "cancel", out.split()[0]])[0] == 0


@EXAMPLES
@given(data=st.data())
def test_browse_commands(cli_queue: rayqueue.TaskQueue[Any], data: st.DataObject) -> None:
    """ls, get, tasks, schedules --resume, and purge/delete (never confirmed: without
    --yes or a terminal they must refuse, whatever they were given)."""
    q = cli_queue
    queue = data.draw(st.one_of(st.just(q.name), words), label="queue")
    command = data.draw(st.sampled_from(["ls", "get", "tasks", "schedules", "purge",
                                         "delete"]), label="command")
    states = st.one_of(st.sampled_from(["ready", "succeeded", "dead", "cancelled"]), words)
    argv = ["-q", queue, command]
    if command == "get":
        argv += data.draw(st.lists(words, min_size=1, max_size=3), label="ids")
    elif command == "schedules":
        argv += ["--resume", *data.draw(st.lists(words, min_size=1, max_size=3))]
    elif command == "purge":
        for state in data.draw(st.lists(states, min_size=1, max_size=2), label="states"):
            argv += ["--state", state]
    elif command == "delete":
        argv += [data.draw(st.one_of(st.just(q.name), words), label="name")]
        if data.draw(st.booleans()):
            argv += ["--journal", data.draw(words, label="journal")]
    elif command == "tasks":
        for option in data.draw(st.lists(st.sampled_from(
                ["--state", "--type", "--priority", "--id", "--limit", "--after"]),
                unique=True), label="options"):
            argv += [option, data.draw(states if option == "--state" else words,
                                       label=option)]
    with mock.patch.object(sys, "stdin", io.StringIO("y\n")):  # no terminal to ask on
        code, out = judge(q, argv, may_act=False)
    if command in ("purge", "delete"):
        assert code != 0 or out.startswith("usage:"), argv  # never done unconfirmed
    assert q.get_many([]) == []  # the queue still answers


def _short_wait(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if 0 <= value <= 365 * 86_400 else None


@EXAMPLES
@given(data=st.data())
def test_journal_commands(cli_queue: rayqueue.TaskQueue[Any], data: st.DataObject,
                          tmp_path_factory: pytest.TempPathFactory) -> None:
    q = cli_queue
    assert q.journal is not None
    private = tmp_path_factory.mktemp("paths")
    (private / "plain.txt").write_text("not a journal")
    (private / "dir").mkdir()
    # Paths in a private directory, and the running queue's own journal; a check (read
    # only) also gets odd paths of the system. Nothing here may write outside `private`.
    # No NUL: no command line can carry one (execve's strings end there).
    paths = st.one_of(
        st.sampled_from([q.journal, str(private / "plain.txt"), str(private / "dir"),
                         str(private / "missing.sqlite"), str(private / "no" / "such" / "x"),
                         str(private / "esc\udcff.sqlite")]),
        words.map(lambda w: str(private / (w.replace("/", "_").replace("\x00", "") or "e"))))
    odd = st.sampled_from(["", "/dev/null", "/", "/etc/passwd", "/proc/self/mem"])
    action = data.draw(st.sampled_from(["check", "backup", "restore", "reshard"]))
    journal = data.draw(paths, label="--journal")
    if action == "reshard":
        argv = ["reshard", "--shards", data.draw(words, label="shards"), "--journal", journal]
    elif action == "check":
        argv = ["journal", "check", "--journal", data.draw(paths | odd, label="check")]
    else:
        argv = ["journal", action, data.draw(paths, label="file"), "--journal", journal]
    if data.draw(st.booleans()):
        argv = ["-q", data.draw(words, label="queue"), *argv]
    code, _ = judge(q, argv, may_act=False)
    if q.journal in argv and action in ("restore", "reshard"):
        # The running queue's journal: replacing or splitting it under the queue must
        # be refused, and the queue goes on.
        assert code != 0, argv
    assert q.get_many([]) == []  # the queue still answers


@pytest.mark.parametrize("address", [":::", "x:notaport"])
def test_a_bad_address_in_a_process_of_its_own(address: str, tmp_path: Path) -> None:
    """Only a fresh process resolves ``--address`` (this one has joined Ray already)."""
    env = {**os.environ, "RAY_ADDRESS": ""}
    done = subprocess.run([sys.executable, "-m", "rayqueue.cli", "--address", address,
                           "status"], capture_output=True, text=True, timeout=60, env=env,
                          cwd=tmp_path)
    CODES[done.returncode] += 1
    assert done.returncode == 3, done.stderr[-2000:]
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
