"""Opening a queue's journal, and the test hooks that break it on purpose.

The hooks are off unless their environment variables are set (tests set them on the
queue actor through ``rayqueue.init(queue_env=...)``): ``RAYQUEUE_CRASHPOINT`` exits
the process at a named point, ``RAYQUEUE_STORAGE_FAULTS`` wraps the journal in
:class:`~rayqueue.storage.faulty.FaultyStorage`.
"""

from __future__ import annotations

import os
from pathlib import Path

from loguru import logger

from rayqueue import settings
from rayqueue.errors import StorageError
from rayqueue.storage.base import Storage
from rayqueue.storage.identity import JournalIdentity
from rayqueue.storage.memory import InMemoryStorage, NullStorage
from rayqueue.storage.url import is_postgres_url, shown


def crashpoint(name: str) -> None:
    """Test hook: exit the process here if ``RAYQUEUE_CRASHPOINT`` names this point.

    ``RAYQUEUE_CRASHPOINT_AFTER=n`` fires on the n-th pass (default 1);
    ``RAYQUEUE_CRASHPOINT_ONCE=<file>`` fires only if the file does not exist yet (it is
    created first), so a restarted actor does not crash again.
    """
    point = settings.crash_point()
    if point.name != name:
        return
    passes = _CRASH_PASSES[name] = _CRASH_PASSES.get(name, 0) + 1
    if passes < point.after:
        return
    marker = point.once
    if marker:
        if os.path.exists(marker):
            return
        Path(marker).touch()
    logger.warning("crash point {} reached: exiting", name, action="crashpoint")
    os._exit(137)


_CRASH_PASSES: dict[str, int] = {}


def open_storage(journal: str | None, durability: str, reconstructed: bool,
                 identity: JournalIdentity | None = None) -> Storage:
    """The journal: PostgreSQL when ``journal`` is a ``postgresql://`` URL (a schema per
    shard, see :class:`~rayqueue.storage.postgres.PostgresStorage`), else SQLite at
    ``journal``; when ``journal`` is None, nothing
    (:class:`NullStorage`: the queue lives in its actor's memory), or an
    :class:`InMemoryStorage` under injected faults, so a failed commit has something
    to roll back to.

    A restarted actor must find its journal where it was: serving an empty queue would
    silently lose every task, so a missing file is an error
    (:class:`~rayqueue.errors.JournalNotFoundError`). A journal missing a part, damaged,
    or of another queue (``identity``) is refused, untouched
    (:class:`~rayqueue.errors.JournalCorruptError`).
    """
    from rayqueue.storage.sqlite import SQLiteStorage

    faults = settings.storage_faults()
    storage: Storage
    if journal is not None and is_postgres_url(journal):
        try:
            from rayqueue.storage.postgres import PostgresStorage
        except ImportError as err:
            raise StorageError(f"the journal {shown(journal)} is a PostgreSQL URL, but "
                               f"psycopg cannot be imported here ({err}): pip install "
                               "'rayqueue[postgres]' where the queue actor runs") from None
        storage = PostgresStorage(journal, identity=identity or JournalIdentity(queue=None),
                                  durability="process" if durability == "process" else "full",
                                  create=not reconstructed)
    elif journal is not None:
        storage = SQLiteStorage(journal, durability="process" if durability == "process"
                                else "full", create=not reconstructed, identity=identity)
    else:
        storage = InMemoryStorage() if faults else NullStorage()
    return _faulty(storage, faults) if faults else storage


def _faulty(storage: Storage, spec: str) -> Storage:
    """Test hook: wrap the journal in FaultyStorage (``busy=0.01,ioerr=0.01,seed=3``)."""
    import random

    from rayqueue.storage.faulty import FaultyStorage

    rates = dict(part.split("=") for part in spec.split(","))
    seed = int(rates.pop("seed", "0"))
    cap = rates.pop("max", None)
    return FaultyStorage(storage, rng=random.Random(seed),
                         faults={k: float(v) for k, v in rates.items()},
                         max_faults=None if cap is None else int(cap))
