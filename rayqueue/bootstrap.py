"""Getting a queue: start or attach to Ray, create or find a queue's actors, list and
delete queues (``rayqueue.init``, ``connect``, ``queues``, ``delete``).

Everything that runs once per driver lives here; :class:`~rayqueue.client.TaskQueue`,
which these return, is the user API of one queue and knows nothing of how it was made.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import ray
from loguru import logger
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from rayqueue import clusters, registry, settings
from rayqueue.arguments import check_str, check_timeout
from rayqueue.calls import (
    MAX_PENDING_CALLS,
    _retrying,
    shard_handles,
)
from rayqueue.client import TaskQueue
from rayqueue.config import (
    METRICS_ACTOR,
    NAMESPACE,
    PoolConfig,
    actor_name,
    check_queue_name,
    runtime_settings,
    shard_name,
)
from rayqueue.core.clock import Clock
from rayqueue.core.queue import QueueConfig
from rayqueue.core.shards import check_shards
from rayqueue.errors import (
    ClusterNotFoundError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    QueueLostError,
    QueueNotFoundError,
    QueueRunningError,
)
from rayqueue.middleware import Middleware, check_middleware
from rayqueue.registry import QueueEntry
from rayqueue.storage.layout import default_journal as journal_of
from rayqueue.storage.layout import shard_journals
from rayqueue.storage.url import is_postgres_url, shown
from rayqueue.task import (
    Task,
)

T = TypeVar("T", bound=Task[Any])


def _ensure_ray(address: str | None, ray_init: dict[str, Any] | None) -> None:
    # rayqueue never passes dashboard_host: Ray's dashboard stays on 127.0.0.1 unless
    # the user says otherwise in ray_init.
    if not ray.is_initialized():
        options = dict(ray_init or {})
        if address == "local" and "_temp_dir" not in options:
            # A private throwaway Ray (a notebook's, a test's): its session files go to
            # a directory of its own, not the shared /tmp/ray that `ray status`, `ray
            # stop` and other drivers' address="auto" look at.
            options["_temp_dir"] = tempfile.mkdtemp(prefix="rq-ray-")
        ray.init(address=address, **options)
    for warning in security_warnings(len([n for n in ray.nodes() if n.get("Alive")]),
                                     settings.ray_auth_mode(), ray.__version__):
        logger.warning(warning, action="security_warning")


def security_warnings(nodes: int, auth_mode: str | None, ray_version: str) -> list[str]:
    """What is unsafe about this cluster's setup, in words (empty when nothing is)."""
    out = []
    if nodes > 1 and auth_mode != "token":
        out.append(f"this Ray cluster has {nodes} nodes and RAY_AUTH_MODE={auth_mode!r}: "
                   "anyone who reaches it can run code; set RAY_AUTH_MODE=token everywhere")
    major, minor = (int(x) for x in ray_version.split(".")[:2])
    if (major, minor) < (2, 52):
        out.append(f"Ray {ray_version} has no token authentication; use Ray >= 2.52")
    return out


def default_journal(name: str) -> str:
    """The default journal path of queue ``name`` (absolute, on the driver's node)."""
    return journal_of(name)


def init(
    name: str = "default",
    *,
    pools: Sequence[PoolConfig] | None = None,
    config: QueueConfig | None = None,
    journal: str | os.PathLike[str] | Literal["default"] | None = "default",
    durability: Literal["full", "process"] = "full",
    address: str | None = None,
    ray_init: dict[str, Any] | None = None,
    heartbeat_s: float | None = None,
    clock: Clock | None = None,
    queue_env: dict[str, str] | None = None,
    actor_env: dict[str, str] | None = None,
    shards: int = 1,
    journal_node: str | None = None,
    middleware: Sequence[Middleware] = (),
) -> TaskQueue[Any]:
    """Start (or find) queue ``name`` with its queue and pool actors (and the cluster's
    one metrics actor, if no queue started it yet).

    Joins the Ray cluster at ``address`` (or the one running on this machine, or starts
    a local one with ``ray_init`` keywords). The actors are detached and named in the
    ``rayqueue`` namespace, so other drivers, notebooks and Ray jobs attach with
    :func:`connect`. Creating is idempotent: a queue that exists is joined as it is.

    Args:
        name: the queue's name.
        pools: worker pools (default: one ``default`` pool).
        config: the queue's rules (lease TTL, aging, result TTL, max size...).
        journal: the SQLite journal's path; ``"default"`` is ``.rayqueue/<name>.sqlite``
            under the working directory (or ``$RAYQUEUE_HOME``); ``None`` keeps tasks in
            the queue actor's memory only (lost if it dies). With a journal the queue
            actor is pinned to this node, where the file is, and restarts on failure
            with its state rebuilt from the journal. A ``postgresql://user@host/db``
            URL keeps the journal in PostgreSQL (schema ``rayqueue_<name>``, one per
            shard; needs ``rayqueue[postgres]``): the queue actor is not pinned, Ray
            restarts it on any live node, and an old incarnation still alive is fenced
            (README, "PostgreSQL journal"). Pass the password through ``PGPASSWORD``
            in ``actor_env`` or a ``.pgpass`` file; one in the URL is never logged.
        durability: ``"full"`` (fsync per commit, survives power loss) or ``"process"``
            (survives process crashes, not power loss; faster).
        address: a Ray cluster address (``auto``, ``ray://...``), or None.
        ray_init: keywords for ``ray.init`` when a local Ray is started.
        heartbeat_s: how often workers renew leases (default: a third of the lease TTL).
        clock: the queue's clock (default: the system clock; tests pass an OffsetClock).
        queue_env: environment variables for the queue actor (test hooks such as
            ``RAYQUEUE_CRASHPOINT``).
        actor_env: environment variables for every actor of the queue, workers
            included (e.g. ``RAYQUEUE_LOG_LEVEL``, ``RAYQUEUE_LOG_FILE``,
            ``RAYQUEUE_LIFECYCLE_LEVEL``).
        shards: split the queue over this many queue actors, each owning the tasks
            whose id hashes to it, with its own journal (``<stem>.shard-<i>-of-<n>``
            beside ``journal``). Producers and workers talk to shards directly, so
            throughput grows with shards while cores last. Priority is strict within a
            shard and, across shards, bounded (README, "Sharded queues"); ``max_size``
            is split evenly. The count is fixed for the life of the journals.
        journal_node: the Ray node id whose disk holds the journal (default: this
            driver's node). The queue actor is pinned there (and the pool manager
            placed there while it lives). If that node dies, the queue is
            down (:class:`QueueLostError`) until the node and its disk are back and
            ``init`` is called again: nothing acknowledged is lost.
        middleware: :class:`~rayqueue.middleware.Middleware` instances, hooked into every
            task's life in this producer, the queue actor and every worker (see
            ``rayqueue.middleware`` for the hooks and where each runs). They are given to
            the actors when the queue is created; joining a running queue uses them for
            this producer's hooks only.
    """
    middleware = check_middleware(middleware)
    # The actors' code is loaded only by the driver that creates a queue: a client that
    # attaches (the CLI above all) does not pay for importing it.
    from rayqueue.actors import remote_class
    from rayqueue.actors.metrics import MetricsActor
    from rayqueue.actors.pool import PoolManagerActor
    from rayqueue.actors.queue import CONCURRENCY_GROUPS, QueueActor

    check_shards(shards)
    check_queue_name(name)
    config, pools, beat = runtime_settings(config, pools, durability, heartbeat_s)
    if clock is not None and (isinstance(clock, type)
                              or not callable(getattr(clock, "now", None))):
        # (the queue actor would fail to start on it, as a Ray error)
        raise InvalidArgumentTypeError("clock", "expected a rayqueue.Clock (an object with "
                                       f"now()) or None, got {type(clock).__name__}")
    _check_placement(journal, journal_node, queue_env, actor_env)
    _check_ray_args(address, ray_init)
    _ensure_ray(address, ray_init)
    network = is_postgres_url(journal)
    path = default_journal(name) if journal == "default" else (
        None if journal is None else str(journal) if network else str(Path(journal).resolve()))
    if shards > 1 and config.max_size is not None:
        config = dataclasses.replace(config, max_size=-(-config.max_size // shards))
    common: dict[str, Any] = {"namespace": NAMESPACE, "lifetime": "detached",
                              "get_if_exists": True, "num_cpus": 0, "max_restarts": -1}
    if actor_env:
        # Workers inherit the pool manager's runtime environment, so they get it too.
        common["runtime_env"] = {"env_vars": dict(actor_env)}
    # The control actors live with the driver that creates the queue (the head, where
    # the journal is): a worker node that dies takes only workers with it. Soft: if this
    # node itself is gone, they restart elsewhere.
    here = journal_node or ray.get_runtime_context().get_node_id()
    if journal_node is not None and not any(
            n["NodeID"] == journal_node and n["Alive"] for n in ray.nodes()):
        raise InvalidArgumentError("journal_node", f"{journal_node!r} is not a live node of "
                                   "this cluster (see `ray status` or ray.nodes())")
    common["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node_id=here, soft=True)
    _drop_orphans(name, shards)
    try:  # a queue that runs already keeps its metrics whatever this init's fate
        ray.get_actor(shard_name(name, 0), namespace=NAMESPACE)
        running = True
    except ValueError:
        running = False
    # The cluster's one metrics actor, shared by every queue (whichever init comes first
    # starts it, here; soft, so it restarts elsewhere if this node goes). Not given this
    # queue's actor_env: it is no queue's own.
    metrics = remote_class(MetricsActor).options(
        name=METRICS_ACTOR, **{k: v for k, v in common.items() if k != "runtime_env"}
    ).remote()
    metrics.open.remote(name)  # sent before any actor of the queue can send an event
    try:
        placement: dict[str, Any] = {}
        if path is not None and not network:
            # The journal is a file on this node: the queue actor must live (and restart)
            # here, or it would find no journal.
            placement["scheduling_strategy"] = NodeAffinitySchedulingStrategy(
                node_id=here, soft=False)
        elif path is None:
            # A restarted in-memory queue would come back empty; better to stay dead.
            placement["max_restarts"] = 0
        # A PostgreSQL journal is one URL; each shard is a schema of its own in it.
        journals: list[str | None] = [None] * shards if path is None else [path] * shards \
            if network else list(shard_journals(path, shards))
        env = {"runtime_env": {"env_vars": {**(actor_env or {}), **queue_env}}} if queue_env else {}
        options = {**common, **placement, **env}

        def shard(i: int) -> Any:
            return remote_class(QueueActor, tuple(CONCURRENCY_GROUPS.items())).options(
                name=shard_name(name, i), max_concurrency=10_000,
                max_pending_calls=MAX_PENDING_CALLS, **options,
            ).remote(name, config, metrics, journals[i], clock, durability, i, shards,
                     middleware)

        # Shard 0 first: a queue that exists already says how many shards it has, and no
        # shard of a wrong count is ever created beside it.
        queues = [shard(0)]
        queues += [shard(i) for i in range(1, _shard_count(queues[0], name, shards))]
        for i, queue in enumerate(queues[1:], 1):
            _shard_count(queue, name, shards, i)
        pool = remote_class(PoolManagerActor).options(
            name=actor_name(name, "pool"), max_concurrency=1_000, **common,
        ).remote(name, pools, metrics, beat, shards, middleware)
        _retrying(lambda: pool.start.remote(), 60.0)
        _retrying(lambda: metrics.open.remote(name), 60.0)  # (it took the first one)
        registry.register(name, len(queues), path)  # for rayqueue.queues() and `rayqueue ls`
        return TaskQueue(name, queues[0], pool, metrics,
                         journal=None if path is None else shown(path), shards=queues,
                         middleware=middleware)
    except BaseException:
        if not running:  # what the failed start may have recorded (a refused init of a
            with contextlib.suppress(Exception):  # running queue, e.g. a wrong shard
                metrics.forget.remote(name)  # count, must not stop its metrics)
        raise


def _check_ray_args(address: object, ray_init: object) -> None:
    """``address`` and ``ray_init`` of ``init``/``connect``, before ``ray.init`` sees them."""
    if address is not None:
        check_str("address", address)
    if ray_init is not None and not (isinstance(ray_init, dict)
                                     and all(isinstance(k, str) for k in ray_init)):
        raise InvalidArgumentTypeError("ray_init", "expected a dict of ray.init keywords "
                                       f"(or None), got {type(ray_init).__name__}")


def _check_placement(journal: object, journal_node: object, queue_env: object,
                     actor_env: object) -> None:
    """``init``'s journal, node and environment arguments, before Ray is touched."""
    if journal is not None and not isinstance(journal, (str, os.PathLike)):
        raise InvalidArgumentTypeError(
            "journal", f"expected a path, 'default' or None, got {type(journal).__name__}")
    if is_postgres_url(journal) and journal_node is not None:
        raise InvalidArgumentError(
            "journal_node", "a PostgreSQL journal is on no node: leave journal_node unset")
    if journal is not None and not os.fspath(journal):
        raise InvalidArgumentError(
            "journal", "an empty path: give a file path, 'default', or None (memory only)")
    if journal is not None:
        try:  # what the file system is given; Path.resolve raises a raw error otherwise
            raw = os.fsencode(journal)
        except UnicodeEncodeError as err:
            raise InvalidArgumentError("journal", f"{journal!r} is not a file name this "
                                       f"system can hold ({err.reason})") from None
        if b"\0" in raw:
            raise InvalidArgumentError("journal", f"{journal!r} holds a NUL byte")
    if journal_node is not None:
        check_str("journal_node", journal_node)
    for name, env in (("queue_env", queue_env), ("actor_env", actor_env)):
        if env is not None and not (isinstance(env, dict) and all(
                isinstance(k, str) and isinstance(v, str) for k, v in env.items())):
            raise InvalidArgumentTypeError(name, "expected a dict of str to str (or None)")


def _drop_orphans(name: str, shards: int) -> None:
    """Kill the pool manager of a queue whose queue actor (or one of its shards) is gone
    for good (its journal's node died): it and its workers would keep calling the dead
    actor. The queue about to start from the journal gets a fresh one, with handles on
    every shard, and fresh metrics (the shared metrics actor forgets the lost queue's)."""
    def find(actor: str) -> Any:
        try:
            return ray.get_actor(actor, namespace=NAMESPACE)
        except ValueError:
            return None

    # init creates the shards, then the pool manager: a pool manager with a shard
    # missing is an orphan.
    if find(actor_name(name, "pool")) is None:
        return
    first = find(shard_name(name, 0))
    if first is not None:
        try:  # the running queue's own count (a wrong `shards` is refused later)
            shards = int(_retrying(lambda: first.shard_info.remote(), 30.0)[1])
        except QueueLostError:
            first = None
    if first is not None and all(find(shard_name(name, i)) is not None
                                 for i in range(1, shards)):
        return
    orphan = find(actor_name(name, "pool"))
    if orphan is not None:
        logger.warning("queue {}: replacing the pool actor left from its lost queue actor",
                       name, action="orphan_replaced", role="pool")
        ray.kill(orphan, no_restart=True)  # its workers die with it
        end = time.monotonic() + 30.0
        while find(actor_name(name, "pool")) is not None and time.monotonic() < end:
            time.sleep(0.05)  # until Ray frees the name for the fresh actor
    metrics = find(METRICS_ACTOR)
    if metrics is not None:
        with contextlib.suppress(Exception):
            ray.get(metrics.forget.remote(name), timeout=30.0)


def _shard_count(queue: Any, name: str, shards: int, index: int = 0) -> int:
    """Wait for a shard actor to answer; check it is shard ``index`` of ``shards``."""
    found = tuple(_retrying(lambda: queue.shard_info.remote(), 60.0))
    if found != (index, shards):
        raise InvalidArgumentError("shards", f"queue {name!r} already runs with {found[1]} "
                                   f"shard(s), not {shards}: connect to it, or shut it "
                                   "down first")
    return shards


def _attach(address: str | None, ray_init: dict[str, Any] | None) -> str:
    """Join a running Ray cluster (never start one); its address.

    In a process already on Ray, that cluster. Otherwise ``address``, ``RAY_ADDRESS``,
    or the one cluster running on this machine (see :mod:`rayqueue.clusters`).
    """
    if ray.is_initialized():
        return str(ray.get_runtime_context().gcs_address)
    target = clusters.resolve(address)
    try:
        ray.init(address=target, **(ray_init or {}))
    except (ConnectionError, TimeoutError) as err:
        raise ClusterNotFoundError(target, str(err)) from None
    for warning in security_warnings(len([n for n in ray.nodes() if n.get("Alive")]),
                                     settings.ray_auth_mode(), ray.__version__):
        logger.warning(warning, action="security_warning")
    return target


def connect(name: str = "default", *, address: str | None = None,
            ray_init: dict[str, Any] | None = None,
            middleware: Sequence[Middleware] = ()) -> TaskQueue[Any]:
    """Attach to a queue created by :func:`init` (in this or another driver).

    Attaches to a running Ray cluster and never starts one: in a process already on
    Ray, that cluster; else ``address`` (``host:port``, ``ray://...``), else
    ``RAY_ADDRESS``, else the one Ray cluster running on this machine. With several
    running here and none chosen it refuses rather than guess. ``ray_init``: more
    ``ray.init`` keywords (e.g. ``log_to_driver``).

    ``middleware`` hooks this producer's enqueues (``before_enqueue``,
    ``after_enqueue``); the queue's and workers' hooks are those given to ``init``.

    Raises:
        ClusterNotFoundError: no Ray cluster at ``address``, or none on this machine.
        AmbiguousClusterError: several clusters run on this machine (it lists them).
        QueueNotFoundError: the cluster runs no queue ``name`` (it lists those it runs).
        InvalidNameError: ``name`` is not a valid queue name.
    """
    check_queue_name(name)
    middleware = check_middleware(middleware)
    _check_ray_args(address, ray_init)
    where = _attach(address, ray_init)
    try:
        queue, pool, metrics = (ray.get_actor(actor, namespace=NAMESPACE) for actor in (
            actor_name(name, "queue"), actor_name(name, "pool"), METRICS_ACTOR))
        shards: int = _retrying(lambda: queue.shard_info.remote(), 30.0)[1]
        queues = shard_handles(name, shards)
    except ValueError:
        raise QueueNotFoundError(name, where, [e.name for e in registry.entries()
                                               if e.running]) from None
    return TaskQueue(name, queue, pool, metrics, shards=queues, middleware=middleware)


def queues(*, address: str | None = None,
           ray_init: dict[str, Any] | None = None) -> list[QueueEntry]:
    """The queues on a running Ray cluster (found as :func:`connect` finds it), by name:
    each with its shard count, journal (any password redacted), created time and
    whether its queue actor runs now.

    Raises:
        ClusterNotFoundError: no Ray cluster at ``address``, or none on this machine.
        AmbiguousClusterError: several clusters run on this machine (it lists them).
    """
    _check_ray_args(address, ray_init)
    _attach(address, ray_init)
    return registry.entries()


def delete(name: str, *, journal: str | None = None, address: str | None = None,
           ray_init: dict[str, Any] | None = None, timeout: float = 10.0) -> list[str]:
    """Remove queue ``name`` for good: its actors (when it runs, and is closed), its
    entry in the cluster's queue registry, and its SQLite journal with every shard
    journal beside it. Returns the journal files removed (run it on the journal's node:
    files elsewhere are not seen).

    A queue that runs and is open is refused: close it first (``queue.close()``; its
    workers are then drained for up to ``timeout`` seconds and its actors removed) or
    shut it down. Attaches to a cluster as :func:`connect` does; with no cluster
    running here (and no ``address``), only the journal files are removed. ``journal``:
    the journal as given to :func:`init` (default: the registry's, else
    ``$RAYQUEUE_HOME/<name>.sqlite``).

    Raises:
        QueueRunningError: the queue runs and is open; nothing was removed.
        JournalInUseError: a live process (a queue on another cluster) owns the
            journal; the actors and registry entry were removed, the journal kept.
        InvalidArgumentError: a PostgreSQL journal (drop its tables yourself), or an
            invalid name.
        AmbiguousClusterError: several clusters run here and none was chosen.
    """
    from rayqueue.storage.layout import remove_journals

    check_queue_name(name)
    check_timeout("timeout", timeout)
    _check_ray_args(address, ray_init)
    if journal is not None:
        check_str("journal", journal)
        _check_placement(journal, None, None, None)  # (a path the file system can take)
    entry: QueueEntry | None = None
    try:
        _attach(address, ray_init)
        attached = True
    except ClusterNotFoundError:
        if address is not None:
            raise
        attached = False
    if attached:
        entry = next((e for e in registry.entries() if e.name == name), None)
    path = journal or (entry.journal if entry is not None else None) or journal_of(name)
    if is_postgres_url(path) or "***" in path:
        raise InvalidArgumentError("journal", f"{shown(path)} is not a SQLite journal: "
                                   "rayqueue.delete removes SQLite files only (drop a "
                                   "PostgreSQL journal's schema yourself)")
    if entry is not None and entry.running:
        queue = connect(name, ray_init=ray_init)
        if not queue.stats().closed:
            raise QueueRunningError(name)
        queue.shutdown(timeout)  # drains the workers, removes the actors and entry
    elif attached:
        registry.unregister(name)
    removed = remove_journals(str(Path(path).expanduser().resolve()), name)
    logger.info("queue {} deleted ({} journal files removed)", name, len(removed),
                action="queue_deleted")
    return removed
