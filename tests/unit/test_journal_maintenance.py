"""`rayqueue journal check|backup|restore` on real SQLite files, without Ray."""

from __future__ import annotations

import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from rayqueue import JournalCorruptError, StorageBusyError, TaskState
from rayqueue.cli import main as cli
from rayqueue.storage import SQLiteStorage
from rayqueue.storage.identity import read_side
from rayqueue.storage.maintenance import backup, check, restore
from tests.unit.test_journal_identity import ROOT, SHOP, crash_after, rec, snapshot


def test_check_reports_identity_and_counts_and_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    journal = SQLiteStorage(path, identity=SHOP)
    journal.write(tasks=[rec("a"), rec("b"), replace(rec("c"), state=TaskState.DEAD)])
    journal.close()
    crash_after(path, 1, prefix="late")  # a queue that died with its log beside the file
    before = snapshot(path)
    report = check(path)
    assert snapshot(path) == before
    assert (report.queue, report.shard, report.shards, report.seq) == ("shop", 0, 1, 2)
    assert report.by_state == {"ready": 3, "dead": 1} and report.side_seq == 1
    assert report.files["j.sqlite-wal"] > 0
    assert report.journal_id == read_side(path).journal_id  # type: ignore[union-attr]


def test_check_refuses_what_a_queue_would_refuse(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "j.sqlite"
    crash_after(path, 5)
    path.unlink()
    before = snapshot(path)
    with pytest.raises(JournalCorruptError, match="main file is missing"):
        check(path)
    assert cli(["journal", "check", "--journal", str(path)]) == 1
    assert "main file is missing" in capsys.readouterr().err
    assert snapshot(path) == before
    assert cli(["journal", "check", "--journal", str(tmp_path / "none.sqlite")]) == 3
    assert cli(["journal", "backup", "--journal", str(path)]) == 2  # no backup file named


def test_backup_while_a_writer_commits_is_a_consistent_snapshot(tmp_path: Path) -> None:
    path, copy = tmp_path / "j.sqlite", tmp_path / "backup.sqlite"
    journal = SQLiteStorage(path, identity=SHOP, durability="process")
    journal.write(tasks=[rec(f"first{i}") for i in range(100)])
    started, stop = threading.Event(), threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set():
            # Each commit moves one task on and adds one: a torn copy would show a
            # batch half applied (counts that no commit ever left).
            journal.write(tasks=[replace(rec(f"first{i % 100}"), state=TaskState.SUCCEEDED),
                                 rec(f"w{i}")])
            i += 1
            started.set()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        started.wait(10)
        report = backup(path, copy)
    finally:
        stop.set()
        thread.join()
    journal.close()
    restored = SQLiteStorage(copy, create=False)
    tasks = restored.load().tasks
    restored.close()
    commits = report.seq - 1  # the first commit added the 100 "first" tasks
    assert commits >= 1 and len(tasks) == 100 + commits
    assert report.journal_id == read_side(path).journal_id  # type: ignore[union-attr]
    assert not Path(f"{copy}-wal").exists()  # one self-contained file


def test_restore_puts_a_backup_in_place_of_a_broken_journal(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[
                                                                str]) -> None:
    path, copy = tmp_path / "j.sqlite", tmp_path / "backup.sqlite"
    journal = SQLiteStorage(path, identity=SHOP)
    journal.write(tasks=[rec("a"), rec("b")])
    assert cli(["journal", "backup", str(copy), "--journal", str(path)]) == 0
    journal.write(tasks=[rec("c")])
    journal.close()
    path.write_bytes(b"garbage" * 1000)  # the journal is lost
    with pytest.raises(JournalCorruptError):
        SQLiteStorage(path, identity=SHOP)
    assert cli(["journal", "restore", str(copy), "--journal", str(path)]) == 0
    assert "pre-restore" in capsys.readouterr().out
    reopened = SQLiteStorage(path, identity=SHOP, create=False)  # its side file agrees
    assert sorted(r.id for r in reopened.load().tasks) == ["a", "b"]
    assert reopened.seq == 1
    reopened.close()
    kept = [p.name for p in tmp_path.glob("j.sqlite.pre-restore-*")]
    assert any(name.endswith(".id") for name in kept) and len(kept) >= 2


_HOLDER = """
import sys
from rayqueue.storage import SQLiteStorage
journal = SQLiteStorage(sys.argv[1])
journal.write()
print("open", flush=True)
sys.stdin.read()
journal.close()
"""


def test_restore_refuses_a_journal_a_process_has_open(tmp_path: Path) -> None:
    path, copy = tmp_path / "j.sqlite", tmp_path / "backup.sqlite"
    SQLiteStorage(path, identity=SHOP).close()
    backup(path, copy)
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(path)], cwd=ROOT,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        before = snapshot(path)
        with pytest.raises(StorageBusyError, match="open in another process"):
            restore(copy, path)
        assert snapshot(path) == before
    finally:
        holder.communicate("", timeout=30)
    restore(copy, path)  # once it is closed
