"""Configuration of a queue's runtime: worker pools and the names of its actors."""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from rayqueue.core.scaling import ScalingConfig

#: Ray namespace holding every rayqueue actor, so any driver can find them by name.
NAMESPACE = "rayqueue"


def actor_name(queue: str, role: str) -> str:
    """The Ray actor name of ``role`` (queue, pool, metrics) for queue ``queue``."""
    return f"{queue}.{role}"


def shard_name(queue: str, shard: int) -> str:
    """The Ray actor name of shard ``shard`` of queue ``queue`` (shard 0 is the queue
    actor of an unsharded queue, so ``connect`` finds every queue the same way)."""
    return actor_name(queue, "queue") if shard == 0 else f"{queue}.queue.{shard}"


def shard_handles(queue: str, shards: int) -> list[Any]:
    """Handles on every shard actor of ``queue``."""
    import ray

    return [ray.get_actor(shard_name(queue, i), namespace=NAMESPACE) for i in range(shards)]


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

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(default="default", min_length=1, max_length=64)
    min_workers: int = Field(default=0, ge=0)
    max_workers: int = Field(default=4, ge=1)
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

    @field_validator("target_tasks_per_worker", "upscale_delay_s", "downscale_delay_s",
                     "num_cpus", "num_gpus")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be finite")
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
