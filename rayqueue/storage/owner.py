"""One owner per journal: an exclusive lock held for as long as the journal is open.

SQLite would let two processes write one journal in turn, and two queues (or a queue
and a stale copy of itself) would then hand out the same tasks twice. The owner takes
``flock(LOCK_EX)`` on ``<journal>.lock`` before it reads or writes a byte of the journal
and writes who it is there; the kernel drops the lock when the process ends, however it
ends, so a restarted queue actor finds it free. A lock file, not the journal itself:
closing any descriptor of the journal would drop SQLite's own POSIX locks.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import time
from pathlib import Path

from rayqueue.errors import JournalInUseError, StorageError

#: How often a waiting opener tries the lock again.
_RETRY_S = 0.05


def lock_path(journal: str | os.PathLike[str]) -> Path:
    """The lock file of a journal: ``<journal>.lock``."""
    return Path(f"{journal}.lock")


class JournalOwner:
    """The lock on one journal, held until :meth:`release` (or the process ends)."""

    def __init__(self, journal: str | os.PathLike[str], *, queue: str | None,
                 wait_s: float = 5.0) -> None:
        """Take the lock, waiting up to ``wait_s`` for an owner that is exiting.

        Raises:
            JournalInUseError: another live process holds it; the message names it.
            StorageError: the lock file cannot be opened.
        """
        self._fd: int | None = None
        self._path = lock_path(journal)
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as err:
            raise StorageError(f"cannot open the lock file {str(self._path)!r}: {err}") from err
        deadline = time.monotonic() + max(0.0, wait_s)
        pause = threading.Event()
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    owner = self._read_owner()
                    self.release()
                    raise JournalInUseError(str(journal), owner) from None
                pause.wait(_RETRY_S)  # the owner may be exiting: its lock goes with it
            except OSError as err:
                self.release()
                raise StorageError(f"cannot lock {str(self._path)!r}: {err}") from err
        me = {"queue": queue, "pid": os.getpid(), "host": socket.gethostname(),
              "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        try:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, json.dumps(me).encode(), 0)
        except OSError:
            pass  # who owns it is for error messages only; the lock is what counts

    def _read_owner(self) -> str:
        assert self._fd is not None
        try:
            me = json.loads(os.pread(self._fd, 4096, 0) or b"{}")
            return (f"queue {me.get('queue')!r} (pid {me.get('pid')} on {me.get('host')}, "
                    f"since {me.get('since')})")
        except (OSError, ValueError, AttributeError):
            return "another process"

    def __del__(self) -> None:  # a journal dropped unclosed lets its lock go too
        self.release()

    def release(self) -> None:
        """Let the journal go (idempotent); the lock file stays, unlocked."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the descriptor drops the flock
