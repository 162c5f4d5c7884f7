"""A SQLite journal knows itself: damaged, partial or foreign journals are refused untouched.

Every refusal is checked twice: the typed error, and that no byte and no mtime of the
journal's files (main, ``-wal``, ``-shm``, side file) changed. A crashed queue is a
child process that commits and then leaves with ``os._exit``, as a killed actor does.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from rayqueue import JournalCorruptError, StorageError, TaskRecord, TaskState
from rayqueue.storage import SQLiteStorage
from rayqueue.storage import sqlite as sqlite_module
from rayqueue.storage.codec import row_of_task
from rayqueue.storage.identity import JournalIdentity, parts, read_side
from tests.unit.conftest import T0

ROOT = Path(__file__).resolve().parents[2]
SHOP = JournalIdentity(queue="shop", shard=0, shards=1)

#: A queue actor that commits ``n`` batches and dies without closing its journal.
_CRASHING_WRITER = """
import os, sys
from dataclasses import replace
from rayqueue.storage import sqlite
from rayqueue.storage.identity import JournalIdentity
from tests.unit.test_journal_identity import rec
sqlite.CHECKPOINT_EVERY_S = float(sys.argv[3])
journal = sqlite.SQLiteStorage(sys.argv[1], identity=JournalIdentity(queue="shop"))
for i in range(int(sys.argv[2])):
    journal.write(tasks=[rec(f"{sys.argv[4]}{i}")])
os._exit(0)
"""


def rec(task_id: str) -> TaskRecord:
    return TaskRecord(id=task_id, task_name="t", payload='{"x":1}', priority=50,
                      pool="default", state=TaskState.READY, seq=1, created_at=T0,
                      due_at=T0, updated_at=T0)


def crash_after(path: Path, commits: int, side_every_s: float = 3600.0,
                prefix: str = "t") -> None:
    """Commit ``commits`` batches in a child process that then dies without closing."""
    subprocess.run([sys.executable, "-c", _CRASHING_WRITER, str(path), str(commits),
                    str(side_every_s), prefix], check=True, cwd=ROOT,
                   env={**os.environ, "PYTHONPATH": str(ROOT)})


def snapshot(path: Path) -> dict[str, tuple[bytes, int] | None]:
    """Bytes and mtime of every file of the journal (None where there is none)."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) if p.exists() else None
            for p in parts(path)}


def refused(path: Path, match: str, **kwargs: object) -> JournalCorruptError:
    """Open ``path``, expect a refusal, and check that nothing of it changed."""
    before = snapshot(path)
    with pytest.raises(JournalCorruptError, match=match) as info:
        SQLiteStorage(path, **kwargs)  # type: ignore[arg-type]
    assert snapshot(path) == before
    assert not list(path.parent.glob(".rayqueue-check-*"))  # no temporary copy left
    return info.value


def written(path: Path, n: int, identity: JournalIdentity = SHOP) -> None:
    journal = SQLiteStorage(path, identity=identity)
    for i in range(n):
        journal.write(tasks=[rec(f"t{i}")])
    journal.close()


# ------------------------------------------------------------------- refusals
@pytest.mark.parametrize("create", [True, False])
def test_main_file_deleted_with_its_wal_left_is_refused(tmp_path: Path, create: bool) -> None:
    path = tmp_path / "j.sqlite"
    crash_after(path, 50)
    assert Path(f"{path}-wal").stat().st_size > 0
    path.unlink()
    err = refused(path, "main file is missing, but j.sqlite-wal, j.sqlite-shm, j.sqlite.id",
                  create=create)
    assert isinstance(err, StorageError) and err.path == str(path)
    assert "rayqueue journal check" in str(err) and "restore" in str(err)
    assert pickle.loads(pickle.dumps(err)).problem == err.problem


def test_main_file_deleted_after_a_clean_close_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    written(path, 3)
    path.unlink()
    refused(path, r"main file is missing, but j\.sqlite\.id")


def test_wal_deleted_after_a_crash_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    crash_after(path, 50)
    Path(f"{path}-wal").unlink()
    refused(path, "write-ahead log .* is gone")


def test_a_crashed_journal_read_read_only_still_opens_and_read_read_write_says_why_not(
        tmp_path: Path) -> None:
    """Looking inside a crashed queue's journal (README, Durability): a read-only
    connection leaves its log alone; a read-write one, the last to close, folds the log
    into the main file and deletes it, and the refusal then says that case loses
    nothing (deleting the side file accepts the journal, with every commit)."""
    path = tmp_path / "j.sqlite"
    crash_after(path, 20)
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        assert db.execute("SELECT count(*) FROM tasks").fetchone()[0] == 20
    assert Path(f"{path}-wal").exists()
    with contextlib.closing(sqlite3.connect(path)) as db:  # the sqlite3 shell's way
        assert db.execute("SELECT count(*) FROM tasks").fetchone()[0] == 20
    assert not Path(f"{path}-wal").exists()
    refused(path, "unless another SQLite program opened the journal since")
    side = read_side(path)  # it says the queue stopped without closing it
    assert side is not None and side.open
    Path(f"{path}.id").unlink()
    journal = SQLiteStorage(path, identity=SHOP, create=False)
    assert len(journal.load().tasks) == 20 and journal.seq == 20
    journal.close()


def test_foreign_wal_is_refused(tmp_path: Path) -> None:
    path, other = tmp_path / "j.sqlite", tmp_path / "other.sqlite"
    crash_after(path, 20, side_every_s=0.0)
    crash_after(other, 40, side_every_s=0.0, prefix="o")
    shutil.copyfile(f"{other}-wal", f"{path}-wal")
    refused(path, "files of two journals are mixed")


def test_an_older_copy_of_the_main_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    written(path, 3)
    shutil.copyfile(path, tmp_path / "old")
    written(path, 5)
    shutil.copyfile(tmp_path / "old", path)
    refused(path, r"records commit #8 but the journal holds only up to #3.*older copy")


@pytest.mark.parametrize("other", [JournalIdentity(queue="billing"),
                                   JournalIdentity(queue="shop", shard=1, shards=2)])
def test_another_queues_or_shards_journal_is_refused(tmp_path: Path,
                                                     other: JournalIdentity) -> None:
    path = tmp_path / "j.sqlite"
    written(path, 2)
    refused(path, "journal of queue 'shop', shard 0 of 1, not of queue", identity=other)
    SQLiteStorage(path, identity=SHOP).close()  # its own queue still opens it


@pytest.mark.parametrize("crashed", [False, True])
@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_damaged_main_file_is_refused(tmp_path: Path, damage: str, crashed: bool) -> None:
    path = tmp_path / "j.sqlite"
    if crashed:  # the log must survive the refused open too
        written(path, 200)
        crash_after(path, 20, prefix="late")
    else:
        written(path, 200)
    size = path.stat().st_size
    if damage == "garbage":
        path.write_bytes(os.urandom(size))
        match = "not a SQLite database"
    else:
        with open(path, "r+b") as f:
            f.truncate(size // 2)
        match = "truncated"
    refused(path, match)


def test_corrupt_pages_fail_the_integrity_check(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    written(path, 300)
    with open(path, "r+b") as f:  # garbage over the pages after the header page
        f.seek(4096)
        f.write(os.urandom(path.stat().st_size - 4096))
    refused(path, "integrity check fails|cannot read it")


# ------------------------------------------------------------- what still opens
def test_a_crashed_journal_with_its_wal_opens_whole(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    crash_after(path, 30, side_every_s=0.0)
    journal = SQLiteStorage(path, identity=SHOP, create=False)
    assert len(journal.load().tasks) == 30 and journal.seq == 30
    journal.close()


def test_a_checkpoint_cut_short_by_a_kill_opens_whole(tmp_path: Path) -> None:
    """A checkpoint copies the log's pages into the main file in page order, the header
    page first. Killed midway, the main file is shorter than its new header says while
    the log still holds every page past the end: SQLite replays it, and the journal must
    open with every task (a SIGKILLed queue actor once came back refusing its journal as
    "truncated: 327680 bytes where its header says 475136")."""
    path = tmp_path / "j.sqlite"
    written(path, 5)
    crash_after(path, 400, prefix="late")  # the log holds pages past the main file's end
    old_pages = path.stat().st_size // 4096
    # What the finished checkpoint would have written, made on a copy...
    done = tmp_path / "done"
    done.mkdir()
    shutil.copyfile(path, done / "j.sqlite")
    shutil.copyfile(f"{path}-wal", done / "j.sqlite-wal")
    conn = sqlite3.connect(done / "j.sqlite")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    full = (done / "j.sqlite").read_bytes()
    header_pages = int.from_bytes(full[28:32], "big")
    # ...and the kill: its first pages are in the main file, the rest are not yet.
    cut = (old_pages + header_pages) // 2
    assert old_pages < cut < header_pages
    path.write_bytes(full[: cut * 4096])
    assert path.stat().st_size < header_pages * 4096  # shorter than its header says
    journal = SQLiteStorage(path, identity=SHOP, create=False)
    tasks = {r.id for r in journal.load().tasks}
    assert len(tasks) == 405 and {"t0", "late399"} <= tasks
    journal.close()


def test_a_journal_of_the_previous_version_is_adopted(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    old = sqlite3.connect(path, isolation_level=None)  # the previous version's layout
    old.execute("PRAGMA journal_mode = WAL")
    old.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    old.execute("CREATE TABLE tasks (id TEXT PRIMARY KEY, task_name TEXT NOT NULL,"
                " state TEXT NOT NULL, payload TEXT NOT NULL, record TEXT NOT NULL)")
    old.execute("CREATE TABLE schedules (id TEXT PRIMARY KEY, record TEXT NOT NULL)")
    old.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    old.execute("INSERT INTO tasks VALUES (?, ?, ?, ?, ?)", row_of_task(rec("kept")))
    old.close()
    journal = SQLiteStorage(path, identity=SHOP, create=False)
    assert [r.id for r in journal.load().tasks] == ["kept"]
    journal.write(tasks=[rec("new")])
    journal.close()
    side = read_side(path)
    assert side is not None and (side.queue, side.seq, side.open) == ("shop", 1, False)
    reopened = SQLiteStorage(path, identity=SHOP, create=False)
    assert reopened.journal_id == side.journal_id and reopened.seq == 1
    reopened.close()
    refused(path, "not of queue 'billing'", identity=JournalIdentity(queue="billing"))


def test_a_lost_side_file_is_written_again(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    written(path, 2)
    Path(f"{path}.id").unlink()
    journal = SQLiteStorage(path, identity=SHOP)
    assert len(journal.load().tasks) == 2
    journal.close()
    assert read_side(path).seq == 2  # type: ignore[union-attr]


# ---------------------------------------------------------------- checkpoints
def test_a_cleanly_closed_journal_is_one_file(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    journal = SQLiteStorage(path, identity=SHOP)
    for i in range(500):
        journal.write(tasks=[replace(rec(f"t{i}"), payload='{"x":"' + "y" * 500 + '"}')])
    assert Path(f"{path}-wal").stat().st_size > 0
    journal.close()
    wal = Path(f"{path}-wal")
    assert not wal.exists() or wal.stat().st_size == 0
    side = read_side(path)
    assert side is not None and side.seq == 500 and not side.open
    assert len(SQLiteStorage(path, create=False).load().tasks) == 500


def test_regular_checkpoints_bound_the_wal(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_module, "CHECKPOINT_WAL_BYTES", 64 << 10)
    path = tmp_path / "j.sqlite"
    journal = SQLiteStorage(path, identity=SHOP)
    wal = Path(f"{path}-wal")
    largest = 0
    for i in range(1_000):
        journal.write(tasks=[replace(rec(f"t{i}"), payload='{"x":"' + "y" * 500 + '"}')])
        largest = max(largest, wal.stat().st_size)
    # Each commit appends two or three 4 KiB pages; the log is folded in and cut back
    # each time it passes the bound, so it never holds much more than the bound.
    assert largest < (64 << 10) + 64 * 1024
    assert read_side(path).seq >= 900  # type: ignore[union-attr]
    journal.close()
