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

from rayqueue.storage.base import Storage
from rayqueue.storage.memory import InMemoryStorage, NullStorage


def crashpoint(name: str) -> None:
    """Test hook: exit the process here if ``RAYQUEUE_CRASHPOINT`` names this point.

    ``RAYQUEUE_CRASHPOINT_AFTER=n`` fires on the n-th pass (default 1);
    ``RAYQUEUE_CRASHPOINT_ONCE=<file>`` fires only if the file does not exist yet (it is
    created first), so a restarted actor does not crash again.
    """
    if os.environ.get("RAYQUEUE_CRASHPOINT") != name:
        return
    passes = _CRASH_PASSES[name] = _CRASH_PASSES.get(name, 0) + 1
    if passes < int(os.environ.get("RAYQUEUE_CRASHPOINT_AFTER", "1")):
        return
    marker = os.environ.get("RAYQUEUE_CRASHPOINT_ONCE")
    if marker:
        if os.path.exists(marker):
            return
        Path(marker).touch()
    logger.warning("crash point {} reached: exiting", name, action="crashpoint")
    os._exit(137)


_CRASH_PASSES: dict[str, int] = {}


def open_storage(journal: str | None, durability: str, reconstructed: bool) -> Storage:
    """The journal: SQLite at ``journal``; when ``journal`` is None, nothing
    (:class:`NullStorage`: the queue lives in its actor's memory), or an
    :class:`InMemoryStorage` under injected faults, so a failed commit has something
    to roll back to.

    A restarted actor must find its journal where it was: serving an empty queue would
    silently lose every task, so a missing file is an error
    (:class:`~rayqueue.errors.JournalNotFoundError`).
    """
    from rayqueue.storage.sqlite import SQLiteStorage

    faults = os.environ.get("RAYQUEUE_STORAGE_FAULTS")
    storage: Storage
    if journal is not None:
        storage = SQLiteStorage(journal, durability="process" if durability == "process"
                                else "full", create=not reconstructed)
    else:
        storage = InMemoryStorage() if faults else NullStorage()
    return _faulty(storage, faults) if faults else storage


def shard_journals(path: str, shards: int) -> list[str]:
    """The journal file of each shard: ``path`` itself for an unsharded queue, else
    ``<stem>.shard-<i>-of-<n><suffix>`` beside it."""
    if shards == 1:
        return [path]
    p = Path(path)
    return [str(p.with_name(f"{p.stem}.shard-{i}-of-{shards}{p.suffix}")) for i in range(shards)]


def check_layout(journal: str, shards: int) -> None:
    """Refuse to start shard 0 (journal ``journal``) beside journals written with another
    shard count: their tasks hash to other shards, and starting fresh beside them would
    hide them. Runs in the queue actor, on the node that holds the files."""
    p = Path(journal)
    if shards > 1:  # back to the queue's base name: <stem>.shard-0-of-<n><suffix>
        p = p.with_name(p.name.replace(f".shard-0-of-{shards}", "", 1))
    base = str(p)
    mine = set(shard_journals(base, shards))
    found = sorted(str(f) for f in [p, *p.parent.glob(f"{p.stem}.shard-*-of-*{p.suffix}")]
                   if f.exists() and str(f) not in mine)
    if found:
        raise ValueError(
            f"queue journals for another shard count exist: {', '.join(found)}. Start the "
            "queue with the shard count they were written with; to change it, let the "
            "queue drain (join), shut it down and move those files away")


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
