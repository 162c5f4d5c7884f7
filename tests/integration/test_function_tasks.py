"""Function tasks on a real Ray: arguments validated at enqueue, run on a worker, typed
results back, sync and async."""

from __future__ import annotations

import os
from typing import Any

import pytest

from rayqueue import InvalidPayloadError, TaskQueue
from tests.integration.function_probes import Area, area, shout

pytestmark = pytest.mark.integration


def test_function_tasks_run_on_workers_with_typed_results(make_queue: Any) -> None:
    q: TaskQueue[Any] = make_queue()
    result = area.enqueue(q, 3, height=4).result(timeout=60)
    assert isinstance(result, Area) and result.area == 12
    assert result.pid != os.getpid()  # it ran on a worker, not here
    assert shout.enqueue(q, "hi").result(timeout=60) == "HI!"
    assert q.enqueue(area.bind(width=5), priority=90).result(timeout=60).area == 10
    with pytest.raises(InvalidPayloadError):
        area.enqueue(q, "wide")  # type: ignore[arg-type]
