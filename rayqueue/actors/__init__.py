"""Thin Ray shells: each actor owns one core object, a clock and the Ray plumbing."""

from __future__ import annotations

import functools
from typing import Any


@functools.cache
def remote_class(cls: type, concurrency_groups: tuple[tuple[str, int], ...] = ()) -> Any:
    """``ray.remote(cls)``, made once per process and class.

    Ray exports a remote class to the cluster the first time an actor is created from
    it in a job, and the export disassembles the whole class to name it (Ray's
    "collision identifier": ~25 ms for WorkerActor on the 2-core machine, far more
    under load). A remote class made anew for every actor was exported anew every
    time: that was most of the pool manager's CPU while it scaled up. Ray notes the
    cluster and job it exported a class to, so one made here is exported again only
    after a new ``ray.init``.
    """
    import ray

    if concurrency_groups:
        return ray.remote(concurrency_groups=dict(concurrency_groups))(cls)
    return ray.remote(cls)


def restarted() -> bool:
    """Whether the calling actor is a restart of an earlier one (Ray restarted it).

    ``RuntimeContext.was_current_actor_reconstructed`` answers the same, but in Ray 2.60
    it reads the deprecated ``RuntimeContext.actor_id`` property, two
    ``RayDeprecationWarning``s per call in every actor's log (and the driver's output).
    This asks the GCS's actor table as it does, by ``get_actor_id()``.
    """
    import ray

    actor_id = ray.get_runtime_context().get_actor_id()
    try:
        from ray._private.state import actors
    except ImportError:  # a later Ray moved it: the public property, warnings and all
        return bool(ray.get_runtime_context().was_current_actor_reconstructed)
    info = actors(actor_id=actor_id)
    return bool(info) and info["NumRestarts"] != 0
