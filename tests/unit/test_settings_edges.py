"""Settings and names are refused at the edge, before Ray is touched (issue 14, items 7-10).

``rayqueue.init`` and ``connect`` are called for real; ``_ensure_ray`` is replaced by a
tripwire, so a call that gets past its checks stops there instead of starting Ray.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar

import pytest

import rayqueue
from rayqueue import (
    InvalidArgumentError,
    InvalidArgumentTypeError,
    InvalidNameError,
    InvalidScheduleError,
    PoolConfig,
    QueueConfig,
    RayQueueError,
    Task,
    TaskError,
    bootstrap,
    testing,
)
from rayqueue.bootstrap import default_journal
from rayqueue.client import TaskQueue
from rayqueue.core.schedule import MIN_INTERVAL_S
from rayqueue.task import MAX_TASK_NAME, lookup, to_new_task


class ReachedRay(Exception):
    """The call passed every check and would now start or join Ray."""


@pytest.fixture(autouse=True)
def no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    def tripwire(*args: object) -> None:
        raise ReachedRay

    monkeypatch.setattr(bootstrap, "_ensure_ray", tripwire)


class Edge(Task[int]):
    task_name: ClassVar[str] = "edges.settings"

    def execute(self) -> int:
        return 1


# ----------------------------------------------------------------- item 8: settings
@pytest.mark.parametrize("durability", ["bogus", "", None, 1, "FULL"])
def test_unknown_durability_is_refused(durability: object) -> None:
    with pytest.raises(InvalidArgumentError, match="durability"):
        rayqueue.init("edge", durability=durability)  # type: ignore[arg-type]


@pytest.mark.parametrize("durability", ["full", "process"])
def test_known_durability_passes(durability: str) -> None:
    with pytest.raises(ReachedRay):
        rayqueue.init("edge", durability=durability)  # type: ignore[arg-type]


@pytest.mark.parametrize("beat", [-1, 0, math.nan, math.inf, 10**400, 1e-9, 30.0, 31, True,
                                  "1"])
def test_meaningless_heartbeat_is_refused(beat: object) -> None:
    # 30 s is the default lease TTL: a heartbeat that slow loses every lease.
    with pytest.raises(InvalidArgumentError, match="heartbeat_s"):
        rayqueue.init("edge", heartbeat_s=beat)  # type: ignore[arg-type]


def test_heartbeat_type_errors_are_type_errors_too() -> None:
    with pytest.raises(TypeError):
        rayqueue.init("edge", heartbeat_s="1")  # type: ignore[arg-type]


@pytest.mark.parametrize("beat", [None, 0.5, 10])
def test_sensible_heartbeat_passes(beat: float | None) -> None:
    with pytest.raises(ReachedRay):
        rayqueue.init("edge", heartbeat_s=beat)


@pytest.mark.parametrize("resources", [{"x": -1}, {"x": math.nan}, {"x": math.inf},
                                       {"CPU": 1}, {"": 1}])
def test_pool_resources_are_finite_and_not_negative(resources: dict[str, float]) -> None:
    with pytest.raises(InvalidArgumentError, match="resources") as err:
        PoolConfig(resources=resources)
    assert isinstance(err.value, ValueError)  # as pydantic's error was


def test_pool_config_errors_are_rayqueue_errors() -> None:
    for bad in ({"max_workers": 10**30}, {"min_workers": -1}, {"num_cpus": math.inf},
                {"min_workers": 3, "max_workers": 2}, {"name": ""}, {"nope": 1}):
        with pytest.raises(InvalidArgumentError, match="PoolConfig"):
            PoolConfig(**bad)  # type: ignore[arg-type]
    assert PoolConfig(resources={"special": 0.5}).resources == {"special": 0.5}


@pytest.mark.parametrize("limit", [math.nan, -1, 0, 1.5, True, None])
def test_max_payload_bytes_is_a_positive_int(limit: object) -> None:
    with pytest.raises(InvalidArgumentError, match="max_payload_bytes"):
        QueueConfig(max_payload_bytes=limit)  # type: ignore[arg-type]


def test_queue_config_overflow_is_refused_not_raised_raw() -> None:
    with pytest.raises(InvalidArgumentError, match="lease_ttl"):
        QueueConfig(lease_ttl=10**400)


@pytest.mark.parametrize("pools", [["default"], "default", PoolConfig(), [None], 5,
                                   {"default": PoolConfig()}])
def test_pools_must_be_pool_configs(pools: object) -> None:
    with pytest.raises(InvalidArgumentTypeError, match="pools"):
        rayqueue.init("edge", pools=pools)  # type: ignore[arg-type]


def test_pools_may_be_any_iterable_of_pool_configs() -> None:
    with pytest.raises(ReachedRay):
        rayqueue.init("edge", pools=(PoolConfig(name=n) for n in ("a", "b")))  # type: ignore[arg-type]


def test_duplicate_pool_names_are_refused() -> None:
    with pytest.raises(InvalidArgumentError, match=r"unique.*default"):
        rayqueue.init("edge", pools=[PoolConfig(), PoolConfig(max_workers=2)])


@pytest.mark.parametrize("config", ["x", {"lease_ttl": 1}, 5])
def test_config_must_be_a_queue_config(config: object) -> None:
    with pytest.raises(InvalidArgumentTypeError, match="config"):
        rayqueue.init("edge", config=config)  # type: ignore[arg-type]


def _bare_queue() -> TaskQueue[Any]:
    """A TaskQueue with no actors behind it: what schedule() checks first, it checks
    before touching any of them."""
    return testing.offline_queue()


@pytest.mark.parametrize("every", [1e-9, 0, MIN_INTERVAL_S / 2, 10**400, math.inf, math.nan,
                                   "60", True])
def test_schedule_interval_has_a_floor_and_is_finite(every: object) -> None:
    with pytest.raises(InvalidScheduleError, match="interval"):
        _bare_queue().schedule(Edge(), every=every)  # type: ignore[arg-type]


def test_unknown_misfire_policy_is_a_schedule_error() -> None:
    with pytest.raises(InvalidScheduleError, match="misfire"):
        _bare_queue().schedule(Edge(), every=60, misfire="bogus")


# -------------------------------------------------------------- item 9: queue names
BAD_QUEUE_NAMES = ["", "a/b", "../etc", "../../../elsewhere/escaped", "/abs", ".hidden",
                   "a..b", "-x", "x" * 65, "sp ace", "nul\x00", "é", "shop.shard-1-of-4"]


@pytest.mark.parametrize("name", BAD_QUEUE_NAMES)
def test_bad_queue_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidNameError, match="queue name"):
        rayqueue.init(name)
    with pytest.raises(InvalidNameError):
        rayqueue.connect(name)


@pytest.mark.parametrize("name", [None, 5, b"shop"])
def test_queue_names_are_str(name: object) -> None:
    with pytest.raises(InvalidNameError):
        rayqueue.init(name)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", BAD_QUEUE_NAMES)
def test_a_queue_name_never_makes_a_journal_path(name: str) -> None:
    with pytest.raises(InvalidNameError):
        default_journal(name)


@pytest.mark.parametrize("name", ["shop", "billing-eu.v2", "Q_1", "x" * 64])
def test_good_queue_names_stay_in_the_journal_directory(
        name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAYQUEUE_HOME", str(tmp_path))
    assert Path(default_journal(name)) == tmp_path.resolve() / f"{name}.sqlite"
    with pytest.raises(ReachedRay):
        rayqueue.init(name)


# --------------------------------------------------------------- task names (item 8)
@pytest.mark.parametrize("name", ["", "a\x00b", "line\nbreak", "x" * (MAX_TASK_NAME + 1),
                                  "lone\ud800", None, 5])
def test_bad_task_names_are_refused_at_class_definition(name: object) -> None:
    with pytest.raises(InvalidNameError, match="task"):
        class Bad(Task[int]):
            task_name: ClassVar[str] = name  # type: ignore[assignment]

            def execute(self) -> int:
                return 1


@pytest.mark.parametrize("name", [None, 5, "", "nul\x00"])
def test_a_task_name_changed_after_definition_is_refused_on_enqueue(name: object) -> None:
    class Renamed(Task[int]):
        task_name: ClassVar[str] = "edges.renamed"

        def execute(self) -> int:
            return 1

    Renamed.task_name = name  # type: ignore[assignment]
    with pytest.raises(InvalidNameError, match="task"):
        to_new_task(Renamed())


def test_a_long_printable_task_name_is_fine() -> None:
    class Long(Task[int]):
        task_name: ClassVar[str] = "é" * MAX_TASK_NAME

        def execute(self) -> int:
            return 1

    assert lookup("é" * MAX_TASK_NAME) is Long


# ---------------------------------------------------- item 10: one class per task name
def _define(module: str, task_name: str) -> type[Task[int]]:
    """A class ``Charge`` of ``module`` (as if defined in that file) named ``task_name``."""
    namespace: dict[str, Any] = {"__name__": module, "Task": Task, "ClassVar": ClassVar}
    exec("class Charge(Task[int]):\n"
         f"    task_name: ClassVar[str] = {task_name!r}\n"
         "    def execute(self) -> int:\n"
         "        return 1\n", namespace)
    cls: type[Task[int]] = namespace["Charge"]
    return cls


def test_same_class_name_in_two_modules_is_refused() -> None:
    payments = _define("payments", "edges.charge")
    with pytest.raises(TaskError, match=r"payments\.Charge"):
        _define("refunds", "edges.charge")
    assert lookup("edges.charge") is payments


def test_the_same_class_again_replaces_it_as_on_reload() -> None:
    first = _define("notebook_cell", "edges.cell")
    again = _define("notebook_cell", "edges.cell")  # a module reloaded, a cell run again
    assert first is not again and lookup("edges.cell") is again


def test_errors_are_in_the_tree() -> None:
    assert issubclass(InvalidArgumentError, RayQueueError)
    assert issubclass(InvalidArgumentError, ValueError)
    assert issubclass(InvalidArgumentTypeError, TypeError)
    assert issubclass(InvalidNameError, InvalidArgumentError)
