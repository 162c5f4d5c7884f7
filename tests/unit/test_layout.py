"""Journal layout and offline resharding, on real SQLite files (no Ray)."""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from rayqueue import (
    ErrorInfo,
    Failure,
    FakeClock,
    IntervalSpec,
    JournalNotFoundError,
    QueueConfig,
    QueueCore,
    StorageBusyError,
    StorageError,
)
from rayqueue.cli import main as cli
from rayqueue.core.shards import shard_of
from rayqueue.storage.layout import check_layout, layouts, reshard, shard_journals
from rayqueue.storage.sqlite import SQLiteStorage
from tests.unit.conftest import T0, new


def queue_of(base: Path, shards: int) -> tuple[list[QueueCore], list[SQLiteStorage]]:
    """A sharded queue's cores over their journals (as its shard actors would hold)."""
    journals = [SQLiteStorage(f) for f in shard_journals(str(base), shards)]
    return [QueueCore.recover(j, QueueConfig()) for j in journals], journals


def write_history(base: Path, shards: int) -> dict[str, str]:
    """Tasks in every state a journal holds, and a schedule with a run; their states."""
    clock = FakeClock(T0)
    cores, journals = queue_of(base, shards)

    def home(task_id: str) -> QueueCore:
        return cores[shard_of(task_id, shards)]

    for i in range(300):
        home(f"t{i}").enqueue(new(task_id=f"t{i}", priority=i % 100), clock.now())
    home("later").enqueue(new(task_id="later", run_at=T0 + 3600), clock.now())
    home("s").add_schedule(schedule_id="s", task_name="t", payload="{}", priority=50,
                           spec=IntervalSpec(10.0), now=clock.now())
    clock.advance(10)
    home("s").tick(clock.now())  # its first run, in the schedule's shard
    for core in cores:  # per shard: one succeeds, one dies, one stays leased
        leases = core.claim("w", 3, clock.now())
        core.ack(leases[0].task_id, leases[0].token, "1", clock.now())
        core.fail(leases[1].task_id, leases[1].token,
                  Failure(ErrorInfo("CardDeclined", "no"), retryable=False), clock.now())
    states = {i: c.get(i).state.value for c in cores for i in c.task_ids()}
    for journal in journals:
        journal.close()
    return states


@pytest.mark.parametrize(("was", "now"), [(1, 3), (3, 2), (2, 1), (12, 5)])
def test_reshard_moves_every_record_to_the_shard_it_now_hashes_to(tmp_path: Path, was: int,
                                                                  now: int) -> None:
    base = tmp_path / "q.sqlite"
    states = write_history(base, was)
    assert {s for s in states.values()} >= {"ready", "scheduled", "leased", "succeeded",
                                            "dead"}
    done = reshard(str(base), now)
    assert (done.was, done.now, sum(done.tasks)) == (was, now, len(states))
    assert list(layouts(str(base))) == [now]
    assert all(Path(k).exists() for k in done.kept)
    check_layout(shard_journals(str(base), now)[0], now)  # a queue may start on them
    for f in shard_journals(str(base), now):  # closed cleanly: no SQLite side files left
        assert not Path(f + "-wal").exists() and not Path(f + "-shm").exists()

    cores, _ = queue_of(base, now)
    for shard, core in enumerate(cores):
        assert all(shard_of(i, now) == shard for i in core.task_ids())
        assert [s.id for s in core.schedules()] == (["s"] if shard_of("s", now) == shard
                                                   else [])
    assert {i: c.get(i).state.value for c in cores for i in c.task_ids()} == states
    assert sum(len(c.dead_letters()) for c in cores) == was


def test_reshard_refuses_what_it_cannot_do_safely(tmp_path: Path) -> None:
    base = tmp_path / "q.sqlite"
    with pytest.raises(JournalNotFoundError):
        reshard(str(base), 2)
    write_history(base, 2)
    with pytest.raises(ValueError, match="already written for 2 shard"):
        reshard(str(base), 2)
    with pytest.raises(ValueError, match="shards: must be an int"):
        reshard(str(base), 0)
    # A running queue holds its journal open: refused, and nothing changes.
    running = SQLiteStorage(shard_journals(str(base), 2)[1])
    with pytest.raises(StorageBusyError):
        reshard(str(base), 3, busy_s=0.2)
    running.close()
    assert list(layouts(str(base))) == [2]
    # A shard's journal is missing.
    lost = Path(shard_journals(str(base), 2)[1])
    lost.rename(tmp_path / "elsewhere")
    with pytest.raises(ValueError, match="journals are missing"):
        reshard(str(base), 3)
    (tmp_path / "elsewhere").rename(lost)
    # Two shard counts side by side (say, a reshard stopped while renaming): the queue
    # refuses to start, and so does reshard, naming the files.
    SQLiteStorage(base).close()
    with pytest.raises(ValueError, match=r"another shard count exist.*rayqueue reshard"):
        check_layout(shard_journals(str(base), 2)[0], 2)
    with pytest.raises(ValueError, match=r"1 shard.*complete.*2 shard.*complete"):
        reshard(str(base), 3)
    base.unlink()
    SQLiteStorage(shard_journals(str(base), 3)[0]).close()  # one file of a 3-shard set
    with pytest.raises(ValueError, match=r"2 shard.*complete.*3 shard.*only 1 of 3 files"):
        reshard(str(base), 4)


def raw(path: Path | str, statement: str) -> None:
    """One statement on a journal, as a bug or a hand edit might leave it."""
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute(statement)


def test_unreadable_rows_are_refused_or_carried_over_never_dropped(tmp_path: Path) -> None:
    base = tmp_path / "q.sqlite"
    states = write_history(base, 1)
    raw(base, "INSERT INTO tasks VALUES ('bad-json', 't', 'ready', '{}', '{oops')")  # bad JSON
    done = reshard(str(base), 2)
    assert (done.corrupt, sum(done.tasks)) == (1, len(states) + 1)
    cores, journals = queue_of(base, 2)  # a restarted queue shows it as a dead letter
    bad = cores[shard_of("bad-json", 2)].get("bad-json")
    assert (bad.state.value, bad.reason) == ("dead", "corrupt_record")
    for journal in journals:
        journal.close()
    # A row with an unreadable id would be skipped on load: refused, nothing changes.
    first = shard_journals(str(base), 2)[0]
    raw(first, "INSERT INTO tasks VALUES (x'ff', 't', 'ready', '{}', '{}')")
    with pytest.raises(StorageError, match=r"can be read.*nothing was changed"):
        reshard(str(base), 3)
    assert list(layouts(str(base))) == [2]
    assert not list(tmp_path.glob("*.resharding*"))


def test_the_old_journals_are_kept_whole_and_never_overwritten(tmp_path: Path) -> None:
    base = tmp_path / "q.sqlite"
    states = write_history(base, 1)
    kept = [k for n in (2, 1, 2) for k in reshard(str(base), n).kept]
    assert len(set(kept)) == len(kept) == 1 + 2 + 1  # even within the same second
    for group in (kept[:1], kept[1:3], kept[3:]):
        rows = 0
        for aside in group:
            journal = SQLiteStorage(aside, create=False)
            rows += journal.count()
            journal.close()
        assert rows == len(states)


def test_reshard_from_the_command_line(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    base = tmp_path / "shop.sqlite"
    states = write_history(base, 1)
    assert cli(["-q", "shop", "reshard", "--journal", str(base), "--shards", "2"]) == 0
    out = capsys.readouterr().out
    assert "1 -> 2 shard(s)" in out and "shards=2" in out and ".pre-reshard-" in out
    assert sum(len(c.task_ids()) for c in queue_of(base, 2)[0]) == len(states)
    # Bad usage is exit 1 with the reason; the default journal is .rayqueue/<queue>.sqlite.
    assert cli(["-q", "shop", "reshard", "--journal", str(base), "--shards", "2"]) == 1
    assert "already written for 2" in capsys.readouterr().err
    proc = subprocess.run([sys.executable, "-m", "rayqueue.cli", "-q", "nothing-here",
                           "reshard", "--shards", "2"], cwd=tmp_path, capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 1 and "nothing-here.sqlite" in proc.stderr
