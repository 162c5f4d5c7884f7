"""The queue registry: which queues a Ray cluster runs, in the cluster's own KV store.

``init`` writes an entry per queue (name, shard count, journal with any password
redacted, created time) in Ray's internal KV store (the GCS's, namespace ``rayqueue``);
``shutdown`` removes it. :func:`entries` reads them back for ``rayqueue.queues()`` and
``rayqueue ls``, and adds any queue whose actors run without an entry (one started by
an older rayqueue), so the listing shows what runs, not only what was written.

Call these with Ray initialised (the client does).
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from dataclasses import dataclass
from typing import Any

from rayqueue.config import NAMESPACE

_KEY_PREFIX = "queue:"
_SHARD = re.compile(r"^(?P<queue>.+)\.queue(?:\.(?P<shard>\d+))?$")


@dataclass(frozen=True)
class QueueEntry:
    """A queue on a Ray cluster, as ``rayqueue.queues()`` lists it."""

    #: the queue's name (what ``connect`` takes)
    name: str
    #: how many queue actors it is split over
    shards: int
    #: its journal's path (a password in it redacted), or None: memory only or unknown
    journal: str | None
    #: when it was first created, epoch seconds (None: not registered)
    created: float | None
    #: whether its queue actor is running now
    running: bool


def redact(journal: str | None) -> str | None:
    """A journal location fit to show: a password in a URL (``scheme://user:pw@host``)
    or in a ``password=`` parameter replaced by ``***``."""
    if journal is None:
        return None
    text = re.sub(r"(://[^/:@\s]*:)[^@/\s]*@", r"\1***@", journal)
    return re.sub(r"((?:password|passwd|pwd)=)[^&;\s]*", r"\1***", text, flags=re.IGNORECASE)


def _kv() -> Any:
    from ray.experimental import internal_kv

    return internal_kv


def register(name: str, shards: int, journal: str | None) -> None:
    """Record queue ``name`` (a queue joined again keeps its first created time)."""
    kv = _kv()
    key = f"{_KEY_PREFIX}{name}".encode()
    old = kv._internal_kv_get(key, namespace=NAMESPACE)
    created = time.time()
    if old is not None:
        with contextlib.suppress(ValueError, KeyError, TypeError):
            created = float(json.loads(old)["created"])
    value = json.dumps({"name": name, "shards": shards, "journal": redact(journal),
                        "created": created})
    kv._internal_kv_put(key, value.encode(), overwrite=True, namespace=NAMESPACE)


def unregister(name: str) -> None:
    """Remove queue ``name``'s entry (nothing if there is none, or no Ray here)."""
    kv = _kv()
    if kv._internal_kv_initialized():
        kv._internal_kv_del(f"{_KEY_PREFIX}{name}".encode(), namespace=NAMESPACE)


def _running() -> dict[str, int]:
    """Queues whose queue actors run now, with how many shard actors each has."""
    import ray

    shards: dict[str, int] = {}
    for actor in ray.util.list_named_actors(all_namespaces=True):
        if actor.get("namespace") != NAMESPACE:
            continue
        match = _SHARD.match(actor.get("name", ""))
        if match:
            queue = match["queue"]
            shards[queue] = max(shards.get(queue, 0), int(match["shard"] or 0) + 1)
    return shards


def entries() -> list[QueueEntry]:
    """Every queue registered on this cluster or running on it, by name."""
    kv = _kv()
    running = _running()
    found: dict[str, QueueEntry] = {}
    for key in kv._internal_kv_list(_KEY_PREFIX.encode(), namespace=NAMESPACE):
        raw = kv._internal_kv_get(key, namespace=NAMESPACE)
        try:
            data = json.loads(raw)
            entry = QueueEntry(name=str(data["name"]), shards=int(data["shards"]),
                               journal=data.get("journal"), created=float(data["created"]),
                               running=str(data["name"]) in running)
        except (TypeError, ValueError, KeyError):
            continue  # a damaged entry (or one deleted meanwhile) is not a queue
        found[entry.name] = entry
    for name, shards in running.items():
        if name not in found:
            found[name] = QueueEntry(name=name, shards=shards, journal=None, created=None,
                                     running=True)
    return [found[n] for n in sorted(found)]
