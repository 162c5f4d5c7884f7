"""Function tasks without Ray: the generated task type, validation, options."""

from __future__ import annotations

import asyncio
import importlib
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import pytest
import ray.cloudpickle as cloudpickle
from pydantic import BaseModel

from rayqueue import (
    InvalidArgumentError,
    InvalidPayloadError,
    Priority,
    RetryPolicy,
    Task,
    TaskError,
    function_task,
)
from rayqueue.codebook import _same_definition
from rayqueue.task import decode_payload, encode_payload, lookup, to_new_task

ROOT = Path(__file__).resolve().parents[2]


class Total(BaseModel):
    cents: int


@function_task(name="unit.fn.total", priority=Priority.HIGH,
               retry=RetryPolicy(max_attempts=7), timeout=5.0, pool="billing")
def total(prices: list[int], discount: int = 0) -> Total:
    return Total(cents=sum(prices) - discount)


@function_task
async def double(n: int) -> int:
    return 2 * n


def test_the_function_becomes_a_registered_task_type_with_its_options() -> None:
    cls = total.task_class
    assert lookup("unit.fn.total") is cls
    assert (cls.priority, cls.retry.max_attempts, cls.timeout, cls.pool) == (
        Priority.HIGH, 7, 5.0, "billing")
    assert cls.result_type() is Total
    assert double.task_class.task_name == f"{__name__}:double"


def test_bound_tasks_round_trip_and_run() -> None:
    task = total.bind([100, 250], discount=50)
    new = to_new_task(task)
    assert (new.task_name, new.priority, new.pool) == ("unit.fn.total", Priority.HIGH, "billing")
    again = decode_payload("unit.fn.total", encode_payload(task))
    assert again.execute() == Total(cents=300)
    assert asyncio.run(double.bind(21).execute()) == 42  # type: ignore[arg-type]
    assert total([1, 2]) == Total(cents=3)  # calling it runs the function here


@pytest.mark.parametrize(("args", "kwargs", "error"), [
    (("x",), {}, InvalidPayloadError),
    (([1],), {"discount": "lots"}, InvalidPayloadError),
    (([1], 2, 3), {}, InvalidArgumentError),
    ((), {"prices": [1], "tip": 3}, InvalidArgumentError),
])
def test_bad_arguments_get_typed_errors(args: Any, kwargs: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        total.bind(*args, **kwargs)


def test_functions_that_cannot_be_payloads_are_refused() -> None:
    with pytest.raises(TaskError, match=r"\*args"):
        function_task(lambda *xs: 0)
    with pytest.raises(TaskError, match="takes a function"):
        function_task(Total)  # type: ignore[arg-type]


@pytest.mark.parametrize(("name", "module", "attr", "call", "by_value"), [
    ("shop.reserve_stock", "rayqueue.examples.inventory", "reserve_stock.task_class",
     "cls(sku='a', quantity=2).execute().quantity", False),
    ("unit.factory.made", "tests.unit.factory_tasks", "Made", "cls(n=2).execute().n", True),
])
def test_a_shipped_task_class_resolves_on_a_fresh_worker_to_its_modules_class(
        name: str, module: str, attr: str, call: str, by_value: bool) -> None:
    """A process that never imported a task's module (a fresh worker) resolves the
    class a client shipped to the class that module defines, registered once: a function
    task's, and a factory's (shipped by value). A copy rebuilt by value clashed with the
    module's own class in the registry once unpickling imported the module for the
    result type: the first attempt on each fresh worker failed with TaskError."""
    shipped: Any = importlib.import_module(module)
    for part in attr.split("."):
        shipped = getattr(shipped, part)
    blob = cloudpickle.dumps(shipped)
    # a function task's class of an importable module goes by reference, as classes do
    assert (b"_make_skeleton_class" in blob) is by_value
    code = ("import sys\n"
            "from rayqueue.codebook import load_shipped\n"
            f"cls = load_shipped({name!r}, sys.stdin.buffer.read())\n"
            f"import {module} as mod\n"
            f"print(cls is mod.{attr}, {call})\n")
    out = subprocess.run([sys.executable, "-c", code], input=blob, capture_output=True,
                         cwd=ROOT, timeout=60, check=False)
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    assert out.stdout.split() == [b"True", b"2"]


def test_a_shipped_class_that_differs_from_its_modules_class_is_a_clash() -> None:
    """The module's own class is taken for a shipped copy only when it is the same
    definition (module, class name, fields): a class of another shape under the same
    task name still raises the registry's clash."""
    from tests.unit.factory_tasks import Counted, Made

    class Made2(Task[Counted]):  # another shape, same module and task name
        task_name: ClassVar[str] = "unit.factory.made.clash"
        m: int

        def execute(self) -> Counted:
            return Counted(n=self.m)

    Made2.__module__ = Made.__module__
    Made2.__name__ = Made2.__qualname__ = "Made"
    assert not _same_definition(Made, Made2)
    assert _same_definition(Made, Made)
