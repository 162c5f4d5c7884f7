"""Deleting a queue's journal files, and the CLI's confirmations for delete and purge
(issue 16, item 2): no Ray; the Ray-level paths are in tests/integration/test_manage.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from rayqueue import cli
from rayqueue.errors import JournalInUseError
from rayqueue.storage.layout import remove_journals
from rayqueue.storage.owner import JournalOwner


def _journal(path: Path) -> list[Path]:
    files = [path, Path(f"{path}-wal"), Path(f"{path}-shm"), Path(f"{path}.id"),
             Path(f"{path}.lock")]
    for f in files:
        f.write_text("x")
    return files


def test_remove_journals_takes_every_shard_and_side_file_and_nothing_else(
        tmp_path: Path) -> None:
    base = tmp_path / "shop.sqlite"
    mine = _journal(base) + _journal(tmp_path / "shop.shard-0-of-2.sqlite") + _journal(
        tmp_path / "shop.shard-1-of-2.sqlite")
    other = _journal(tmp_path / "shopping.sqlite") + _journal(tmp_path / "shop2.sqlite")
    removed = remove_journals(str(base), "shop")
    assert sorted(removed) == sorted(str(f) for f in mine)
    assert not any(f.exists() for f in mine) and all(f.exists() for f in other)
    assert remove_journals(str(base), "shop") == []  # gone already: nothing to do


def test_a_journal_owned_by_a_live_queue_is_left_whole(tmp_path: Path) -> None:
    base = tmp_path / "shop.sqlite"
    files = _journal(base)
    owner = JournalOwner(base, queue="shop", wait_s=0)
    try:
        with pytest.raises(JournalInUseError):
            remove_journals(str(base), "shop")
        assert all(f.exists() for f in files)
    finally:
        owner.release()


def test_cli_delete_without_a_terminal_needs_yes_and_changes_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = _journal(tmp_path / "shop.sqlite")
    code = cli.main(["delete", "shop", "--journal", str(tmp_path / "shop.sqlite")])
    assert code == cli.EXIT_USAGE
    assert "--yes" in capsys.readouterr().err
    assert all(f.exists() for f in files)


def test_cli_delete_asks_and_a_no_keeps_everything(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    files = _journal(tmp_path / "shop.sqlite")
    monkeypatch.setattr(cli.sys.stdin, "isatty", lambda: True, raising=False)
    asked: list[str] = []
    monkeypatch.setattr("builtins.input", lambda q: asked.append(q) or "n")
    code = cli.main(["delete", "shop", "--journal", str(tmp_path / "shop.sqlite")])
    assert code == cli.EXIT_FAILED and "not confirmed" in capsys.readouterr().err
    assert "Delete queue shop" in asked[0] and all(f.exists() for f in files)


@pytest.mark.parametrize("state", ["ready", "leased", "failed", "scheduled"])
def test_cli_purge_refuses_unfinished_states_before_connecting(
        state: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["--address", "127.0.0.1:1", "purge", "--state", state, "--yes"])
    assert code == cli.EXIT_USAGE
    assert f"cannot purge {state} tasks" in capsys.readouterr().err


def test_cli_tasks_passes_its_filters_and_prints_the_next_cursor(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from rayqueue.info import TaskInfo, TaskPage

    asked: dict[str, object] = {}
    row = TaskInfo(id="pay-1", task_name="shop.payment", state="dead", priority=80,
                   pool="default", attempts=3, lost_attempts=0, created_at=0.0, due_at=0.0,
                   payload_json="", error_type="TimeoutError", error_message="bank slow",
                   brief=True)

    class Queue:
        def tasks(self, **query: object) -> TaskPage:
            asked.update(query)
            return TaskPage(tasks=[row], next="12,")

    monkeypatch.setattr(cli, "_connect", lambda args: Queue())
    code = cli.main(["tasks", "--state", "dead", "--state", "failed", "--type",
                     "shop.payment", "--priority", "80", "--id", "pay", "--limit", "10"])
    assert code == 0
    assert asked == {"state": ["dead", "failed"], "type": "shop.payment", "priority": 80,
                     "id_prefix": "pay", "limit": 10, "after": None}
    out = capsys.readouterr().out
    assert "pay-1" in out and "TimeoutError: bank slow" in out and "--after 12," in out
    with pytest.raises(SystemExit) as usage:  # argparse's own exit, before connecting
        cli.main(["tasks", "--priority", "101"])
    assert usage.value.code == cli.EXIT_USAGE
