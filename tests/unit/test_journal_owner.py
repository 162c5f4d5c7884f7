"""One owner per journal (issue 14, item 3): a second queue, or a second copy of the
same queue, cannot open a journal that a live process holds; a dead owner's lock goes
with it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from rayqueue import JournalCorruptError, StorageBusyError
from rayqueue.errors import JournalInUseError
from rayqueue.storage.identity import JournalIdentity
from rayqueue.storage.sqlite import SQLiteStorage

MAIN = JournalIdentity("main")

HOLDER = """
import sys
from rayqueue.storage.identity import JournalIdentity
from rayqueue.storage.sqlite import SQLiteStorage
s = SQLiteStorage(sys.argv[1], identity=JournalIdentity("main"))
print("open", flush=True)
sys.stdin.read()  # held until killed
"""


def test_a_second_opener_in_the_same_process_is_refused_naming_the_owner(
        tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    first = SQLiteStorage(path, identity=MAIN)
    with pytest.raises(JournalInUseError, match=rf"queue 'main' \(pid {os.getpid()}") as err:
        SQLiteStorage(path, identity=MAIN, busy_timeout_ms=100)
    assert isinstance(err.value, StorageBusyError)
    first.close()
    SQLiteStorage(path, identity=MAIN).close()  # the owner closed it: free again


def test_a_live_owner_process_keeps_it_and_its_death_frees_it(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        with pytest.raises(JournalInUseError, match=rf"pid {holder.pid}"):
            SQLiteStorage(path, identity=MAIN, busy_timeout_ms=100)
        # Another queue is refused too (the journal's identity says whose it is).
        with pytest.raises((JournalInUseError, JournalCorruptError)):
            SQLiteStorage(path, identity=JournalIdentity("thief"), busy_timeout_ms=100)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(30)
    with pytest.raises(ProcessLookupError):  # the owner is gone, however it ended
        os.kill(holder.pid, 0)
    SQLiteStorage(path, identity=MAIN, busy_timeout_ms=100).close()
    with pytest.raises(JournalCorruptError, match="journal of queue 'main'"):
        SQLiteStorage(path, identity=JournalIdentity("thief"))
