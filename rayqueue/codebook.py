"""Where workers find task classes: shipped by clients into Ray's cluster key-value store.

A client ships each task class it uses (cloudpickled: by reference when its module is
importable, by value when it is defined in ``__main__`` or a notebook) under its task
name. Workers look a name up in their own registry first, then here. This is code the
driver ships, as Ray ships functions; the journal never holds it (the journal is data),
and no worker ever imports a module because a journal row names it.

The store lives in Ray's GCS: it outlives queue and worker actor restarts, and a client
that attaches to a queue ships its classes again (after a whole-cluster restart).
"""

from __future__ import annotations

from typing import Any

import ray.cloudpickle as cloudpickle
from loguru import logger
from ray.experimental import internal_kv

from rayqueue.errors import UnknownTaskError
from rayqueue.task import Task, check_task_name, lookup, register

_NAMESPACE = "rayqueue"


def _key(queue: str, task_name: str) -> str:
    return f"types/{queue}/{task_name}"


def ship(queue: str, classes: Any) -> list[str]:
    """Publish task classes for queue ``queue``; returns the names shipped.

    A class that cannot be pickled is skipped with a warning: workers that import its
    module themselves (``PoolConfig.imports``) can still run it.
    """
    shipped = []
    for cls in classes:
        try:
            blob = cloudpickle.dumps(cls)
        except Exception as err:
            logger.warning("cannot ship task class {}: {}", cls.__qualname__, err,
                           action="task_class_unshippable")
            continue
        internal_kv._internal_kv_put(_key(queue, cls.task_name), blob, namespace=_NAMESPACE)
        shipped.append(cls.task_name)
    return shipped


def resolve(queue: str, task_name: str) -> type[Task[Any]]:
    """The class for ``task_name``: this process's registry, else a shipped one.

    Raises:
        UnknownTaskError: nobody shipped or imported it (yet).
        InvalidNameError: ``task_name`` cannot name a task (e.g. a lone surrogate: an
            undecodable byte of a command line, which no key can hold).
    """
    check_task_name(task_name)
    try:
        return lookup(task_name)
    except UnknownTaskError:
        blob = internal_kv._internal_kv_get(_key(queue, task_name), namespace=_NAMESPACE)
        if not blob:
            raise
    return load_shipped(task_name, blob)


def load_shipped(task_name: str, blob: bytes) -> type[Task[Any]]:
    """The class a client shipped under ``task_name``, registered here.

    Raises:
        UnknownTaskError: it cannot be unpickled here (say, shipped by reference and
            its module is missing).
        TaskError: another class (of another module) is registered under its name.
    """
    try:
        cls: type[Task[Any]] = cloudpickle.loads(blob)
    except Exception as err:  # e.g. shipped by reference and its module is missing here
        raise UnknownTaskError(task_name, f"{type(err).__name__}: {err}"[:300]) from err
    try:
        known = lookup(task_name)
    except UnknownTaskError:
        known = None
    if known is not None and known is not cls and _same_definition(known, cls):
        # Unpickling a class rebuilt by value imported its own module (for a type it
        # names by reference), and the module registered the class itself: the same
        # code, and the one the module's other names use.
        return known
    # A class rebuilt by value gets its attributes (task_name included) after its
    # creation hook ran: register it again under its real name.
    register(cls)
    return cls


def _same_definition(known: type[Task[Any]], copy: type[Task[Any]]) -> bool:
    """Whether ``copy`` (rebuilt by value, its qualified name lost) is the class its
    module defines as ``known``: same module, class name and payload fields. Anything
    else under one task name stays a clash (``register`` raises)."""
    return (known.__module__ == copy.__module__ and known.__name__ == copy.__name__
            and set(known.model_fields) == set(copy.model_fields))
