"""Function tasks without Ray: the generated task type, validation, options."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import BaseModel

from rayqueue import (
    InvalidArgumentError,
    InvalidPayloadError,
    Priority,
    RetryPolicy,
    TaskError,
    function_task,
)
from rayqueue.task import decode_payload, encode_payload, lookup, to_new_task


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
