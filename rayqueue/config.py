"""Configuration of a queue's runtime: worker pools, its settings and the names of its actors.

Everything ``rayqueue.init`` is given is checked here, before Ray is touched: a setting
that means nothing (a durability no one knows, a heartbeat of zero, a negative resource,
a queue name that is a path) is refused with an :class:`~rayqueue.errors.InvalidArgumentError`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from rayqueue.core.queue import QueueConfig
from rayqueue.core.scaling import ScalingConfig
from rayqueue.errors import InvalidArgumentError, InvalidArgumentTypeError, InvalidNameError

#: Ray namespace holding every rayqueue actor, so any driver can find them by name.
NAMESPACE = "rayqueue"

#: A queue name: it becomes a journal file name (``<name>.sqlite``) and Ray actor names,
#: so it is a plain file name that can never leave the journal directory.
QUEUE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
#: What a shard's journal is called beside its queue's (``shop.shard-1-of-4``): a queue
#: of that name would be taken for a shard of ``shop``.
_SHARD_STEM = re.compile(r".*\.shard-\d+-of-\d+")
#: The ``durability`` values ``rayqueue.init`` knows.
DURABILITIES = ("full", "process")
#: Fastest accepted heartbeat: below it the workers would spin on renewals.
MIN_HEARTBEAT_S = 0.05
#: Most workers one pool may be given (a bound against typos such as ``10**30``).
MAX_POOL_WORKERS = 10_000


def check_queue_name(name: object) -> str:
    """``name`` if it is a valid queue name, else :class:`InvalidNameError`.

    A queue name is 1 to 64 characters of ``A-Z a-z 0-9 _ . -``, starting with a letter
    or digit, without ``..``, and not shaped like a shard's journal (``x.shard-1-of-4``).
    """
    if not isinstance(name, str):
        raise InvalidNameError("name", f"a queue name is a str, got {type(name).__name__}")
    if not QUEUE_NAME.fullmatch(name) or ".." in name or _SHARD_STEM.fullmatch(name):
        raise InvalidNameError(
            "name", f"invalid queue name {name!r}: use 1 to 64 of A-Z a-z 0-9 _ . - "
            "starting with a letter or digit, without '..' (it names the journal file "
            "<name>.sqlite), e.g. 'shop' or 'billing-eu.v2'")
    return name


def check_durability(value: object) -> str:
    """``value`` if it is one of :data:`DURABILITIES`."""
    if not isinstance(value, str) or value not in DURABILITIES:
        raise InvalidArgumentError(
            "durability", f"{value!r} is not a durability: use 'full' (fsync each commit) "
                          "or 'process' (survives process crashes, not power loss)")
    return value


def check_heartbeat(value: object, lease_ttl: float) -> float:
    """``value`` as the workers' heartbeat period: a finite number of seconds of at least
    :data:`MIN_HEARTBEAT_S` and below the lease TTL (a slower one loses every lease)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidArgumentTypeError(
            "heartbeat_s", f"a number of seconds or None, got {type(value).__name__}")
    try:
        seconds = float(value)
    except OverflowError:
        seconds = math.inf
    if not math.isfinite(seconds) or not MIN_HEARTBEAT_S <= seconds < lease_ttl:
        raise InvalidArgumentError(
            "heartbeat_s", f"{value!r} is not a heartbeat: use a finite number of seconds "
            f"from {MIN_HEARTBEAT_S} to below the lease TTL ({lease_ttl:g} s), or None "
            "for a third of it")
    return seconds


def runtime_settings(config: object, pools: object, durability: object,
                     heartbeat_s: object) -> tuple[QueueConfig, list[PoolConfig], float]:
    """Check what ``rayqueue.init`` was given; returns the queue's config, its pools and
    the heartbeat period, defaults filled in."""
    if config is None:
        config = QueueConfig()
    elif not isinstance(config, QueueConfig):
        raise InvalidArgumentTypeError(
            "config", f"a rayqueue.QueueConfig or None, got {type(config).__name__}")
    if pools is None:
        pools = []
    # A str, a dict and a model iterate too, but are not lists of pools.
    if isinstance(pools, (str, bytes, Mapping, BaseModel)) or not isinstance(pools, Iterable):
        raise InvalidArgumentTypeError(
            "pools", f"a list of rayqueue.PoolConfig, got {type(pools).__name__}")
    pools = list(pools)
    for pool in pools:
        if not isinstance(pool, PoolConfig):
            raise InvalidArgumentTypeError(
                "pools", f"each pool is a rayqueue.PoolConfig, got {pool!r}: e.g. "
                "pools=[PoolConfig(name='default')]")
    checked = pools or [PoolConfig()]
    names = [p.name for p in checked]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise InvalidArgumentError("pools", f"pool names must be unique; given more than "
                                            f"once: {', '.join(twice)}")
    check_durability(durability)
    beat = (config.lease_ttl / 3 if heartbeat_s is None
            else check_heartbeat(heartbeat_s, config.lease_ttl))
    return config, checked, beat


#: The Ray actor name of the cluster's one metrics actor (shared by every queue). Every
#: actor of a queue has a dot in its name (``actor_name``), so no queue's can take it.
METRICS_ACTOR = "rayqueue-metrics"


def actor_name(queue: str, role: str) -> str:
    """The Ray actor name of ``role`` (queue, pool) for queue ``queue``."""
    return f"{queue}.{role}"


def shard_name(queue: str, shard: int) -> str:
    """The Ray actor name of shard ``shard`` of queue ``queue`` (shard 0 is the queue
    actor of an unsharded queue, so ``connect`` finds every queue the same way)."""
    return actor_name(queue, "queue") if shard == 0 else f"{queue}.queue.{shard}"


class PoolConfig(BaseModel):
    """One pool of worker actors: its size bounds, concurrency and Ray resources.

    Task types choose their pool with ``Task.pool``; a pool's workers claim only that
    pool's tasks. Workers request ``num_cpus``/``num_gpus``/``resources`` from Ray, so a
    ``gpu`` pool lands only on nodes with GPUs.

    Attributes:
        name: the pool name tasks refer to.
        min_workers / max_workers: bounds on the worker count.
        concurrency: tasks one worker runs at once (threads for sync tasks).
        target_tasks_per_worker: backlog + in-flight one worker should carry.
        upscale_delay_s / downscale_delay_s: how long demand must hold before scaling.
        num_cpus / num_gpus / resources / label_selector: what each worker asks of Ray.
        spread: place workers with Ray's SPREAD strategy across nodes.
        request_resources: ask Ray's cluster autoscaler for capacity when workers wait
            for resources.
        imports: modules each worker imports at start, so their task types are known
            without a client shipping them (as Celery's ``imports`` setting).
        max_rss_mb: recycle a worker (drain and replace it) once its resident memory
            passes this after a task, against slow leaks in task code.
    """

    # No NaN or infinity in any number, resources included.
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    name: str = Field(default="default", min_length=1, max_length=64)
    min_workers: int = Field(default=0, ge=0, le=MAX_POOL_WORKERS)
    max_workers: int = Field(default=4, ge=1, le=MAX_POOL_WORKERS)
    concurrency: int = Field(default=4, ge=1, le=1024)
    target_tasks_per_worker: float = Field(default=16.0, gt=0)
    upscale_delay_s: float = Field(default=0.0, ge=0)
    downscale_delay_s: float = Field(default=5.0, ge=0)
    num_cpus: float = Field(default=0.25, ge=0)
    num_gpus: float = Field(default=0.0, ge=0)
    resources: dict[str, float] = Field(default_factory=dict)
    label_selector: dict[str, str] = Field(default_factory=dict)
    spread: bool = True
    request_resources: bool = False
    max_rss_mb: float | None = Field(default=None, gt=0)
    imports: tuple[str, ...] = ()

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as err:  # the project's error, with pydantic's as cause
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'PoolConfig'}: "
                                 f"{e['msg']}" for e in err.errors())
            raise InvalidArgumentError("PoolConfig", problems) from err

    @field_validator("resources")
    @classmethod
    def _resources(cls, value: dict[str, float]) -> dict[str, float]:
        for key, amount in value.items():
            if key in ("CPU", "GPU"):
                raise ValueError(f"ask for {key} with num_{key.lower()}s=, not resources=")
            if not key:
                raise ValueError("a resource name is a non-empty str")
            if amount < 0:
                raise ValueError(f"resource {key!r}: {amount!r} is negative; a worker asks "
                                 "for a finite amount >= 0")
        return value

    @model_validator(mode="after")
    def _bounds(self) -> PoolConfig:
        if self.min_workers > self.max_workers:
            raise ValueError(
                f"min_workers ({self.min_workers}) > max_workers ({self.max_workers})"
            )
        return self

    def scaling(self) -> ScalingConfig:
        """The pure scaling policy's view of this pool."""
        return ScalingConfig(
            min_workers=self.min_workers,
            max_workers=self.max_workers,
            target_tasks_per_worker=self.target_tasks_per_worker,
            upscale_delay_s=self.upscale_delay_s,
            downscale_delay_s=self.downscale_delay_s,
        )

    def infeasible_on(self, nodes: list[dict[str, Any]]) -> str | None:
        """Why none of ``nodes`` (``ray.nodes()``) can host one worker, or None.

        Checks each alive node's total resources and labels against what a worker
        asks; a pool that no node can ever host is reported, not left pending.
        """
        need = {"CPU": self.num_cpus, "GPU": self.num_gpus, **self.resources}
        need = {k: v for k, v in need.items() if v}
        alive = [n for n in nodes if n.get("Alive")]
        for node in alive:
            have = node.get("Resources", {})
            labels = node.get("Labels", {}) or {}
            if all(have.get(k, 0) >= v for k, v in need.items()) and all(
                    labels.get(k) == v for k, v in self.label_selector.items()):
                return None
        wants = ", ".join([f"{k}={v:g}" for k, v in need.items()]
                          + [f"label {k}={v}" for k, v in self.label_selector.items()])
        return f"no alive node (of {len(alive)}) has {wants or 'room'}"

    def ray_options(self) -> dict[str, Any]:
        """Options for ``WorkerActor.options(...)``."""
        opts: dict[str, Any] = {"num_cpus": self.num_cpus}
        if self.num_gpus:
            opts["num_gpus"] = self.num_gpus
        if self.resources:
            opts["resources"] = dict(self.resources)
        if self.label_selector:
            opts["label_selector"] = dict(self.label_selector)
        if self.spread:
            opts["scheduling_strategy"] = "SPREAD"
        return opts
