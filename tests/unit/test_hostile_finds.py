"""What the generated hostile-input suites (tests/integration/test_hostile_*.py) found,
each pinned by a plain test that runs without Ray (issue 14, build 8).

``_ensure_ray`` is replaced by a tripwire, as in test_settings_edges: a call that gets
past its checks stops there instead of starting Ray."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest

import rayqueue
from rayqueue import (
    InvalidArgumentError,
    InvalidArgumentTypeError,
    InvalidNameError,
    Task,
    bootstrap,
)
from rayqueue.task import to_new_task


class ReachedRay(Exception):
    """The call passed every check and would now start or join Ray."""


@pytest.fixture(autouse=True)
def no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    def tripwire(*args: object) -> None:
        raise ReachedRay

    monkeypatch.setattr(bootstrap, "_ensure_ray", tripwire)


@pytest.mark.parametrize("journal", ["\x00", "j\x00.sqlite", "bad\ud800.sqlite"])
def test_a_journal_path_the_os_cannot_name_is_an_argument_error(journal: str) -> None:
    """Was a raw ValueError (embedded null byte) or UnicodeEncodeError from Path.resolve."""
    with pytest.raises(InvalidArgumentError, match="journal"):
        rayqueue.init("finds", journal=journal)


def test_a_journal_path_of_undecodable_bytes_is_still_a_path() -> None:
    with pytest.raises(ReachedRay):  # surrogate-escaped bytes are a real file name
        rayqueue.init("finds", journal=b"j\xff.sqlite".decode(errors="surrogateescape"))


@pytest.mark.parametrize("shards", [None, "2", 2.0, 0, pytest.param(10**400, id="10**400")])
def test_a_bad_shard_count_is_an_argument_error(shards: Any) -> None:
    """Was a plain ValueError."""
    with pytest.raises(InvalidArgumentError, match="shards"):
        rayqueue.init("finds", shards=shards)


def test_a_shard_count_of_the_wrong_type_is_a_type_error_too() -> None:
    with pytest.raises(InvalidArgumentTypeError):
        rayqueue.init("finds", shards="2")  # type: ignore[arg-type]


class Renamed(Task[int]):
    task_name: ClassVar[str] = "tests.finds.renamed"

    def execute(self) -> int:
        return 0


@pytest.mark.parametrize("name", [["a", "list"], {"a": 1}, {1, 2}])
def test_a_task_name_changed_to_an_unhashable_value_is_refused(
        name: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Was a raw TypeError (unhashable type) from the registry look-up."""
    monkeypatch.setattr(Renamed, "task_name", name)
    with pytest.raises(InvalidNameError, match="task_name"):
        to_new_task(Renamed())


@pytest.mark.parametrize("module", ["", ".relative", "..x", "a\x00b"])
def test_an_import_the_cli_cannot_even_try_is_a_usage_error(
        module: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Was ``rayqueue: ValueError: Empty module name`` (exit 1) and an "unexpected
    TypeError" for a relative name: now the usage error that --import's others get."""
    from rayqueue.cli import EXIT_USAGE, main

    assert main(["enqueue", "--import", module, "t", "{}"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("rayqueue: --import") and len(err.strip().splitlines()) == 1


def test_a_backup_into_a_missing_directory_is_one_clear_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Was ``rayqueue: unexpected OperationalError: unable to open database file``."""
    from rayqueue.cli import EXIT_FAILED, main
    from rayqueue.storage import SQLiteStorage
    from rayqueue.storage.maintenance import backup

    journal = tmp_path / "j.sqlite"
    SQLiteStorage(journal).close()
    dest = tmp_path / "no" / "such" / "b.sqlite"
    with pytest.raises(FileNotFoundError, match="not a directory"):
        backup(journal, dest)
    assert main(["journal", "backup", str(dest), "--journal", str(journal)]) == EXIT_FAILED
    err = capsys.readouterr().err
    assert "unexpected" not in err and "not a directory" in err
    assert len(err.strip().splitlines()) == 1
    assert not dest.parent.exists()


def test_a_backup_of_a_file_that_is_no_database_is_a_journal_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Was ``rayqueue: unexpected DatabaseError: file is not a database``."""
    from rayqueue import JournalCorruptError
    from rayqueue.cli import EXIT_FAILED, main
    from rayqueue.storage.maintenance import backup

    plain = tmp_path / "plain.txt"
    plain.write_text("not a journal")
    with pytest.raises(JournalCorruptError, match="not an SQLite database"):
        backup(plain, tmp_path / "b.sqlite")
    assert main(["journal", "backup", str(tmp_path / "c.sqlite"),
                 "--journal", str(plain)]) == EXIT_FAILED
    err = capsys.readouterr().err
    assert "unexpected" not in err and "JournalCorruptError" in err
    assert len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.txt"]  # nothing left
