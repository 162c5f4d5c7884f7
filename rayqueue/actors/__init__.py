"""Thin Ray shells: each actor owns one core object, a clock and the Ray plumbing."""


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
