"""Ray fixtures shared by integration and fault tests: one local Ray per test session.

Loaded as a pytest plugin from ``tests/conftest.py``; Ray itself is imported only when
a test asks for the cluster, so the unit suite never pays for it.
"""

from __future__ import annotations

import contextlib
import os

# Ray 2.60 reads this at import: our throwaway cluster runs without token auth.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import rayqueue
from tests.ports import free_port

#: No idle workers started ahead (Ray starts one per CPU and keeps them polling; every
#: actor of ours starts its own process anyway): on the 2-core machine these idle
#: processes took ~3 % of a core per cluster (and node) for the whole session. Every
#: test cluster starts with it (here and ``tests.multinode.cluster``).
NO_PRESTART = {"prestart_worker_first_driver": False, "enable_worker_prestart": False}


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[dict[str, Any]]:
    """A private local Ray: 8 logical CPUs, a custom resource, metrics on a known port."""
    import ray
    import ray.cloudpickle as cloudpickle

    from tests.faults import ledger_tasks
    from tests.integration import probe_tasks

    # Task classes defined in test modules travel by value, as a notebook's would.
    cloudpickle.register_pickle_by_value(probe_tasks)
    cloudpickle.register_pickle_by_value(ledger_tasks)
    port = free_port()
    temp = tempfile.mkdtemp(prefix="rq-", dir="/tmp")
    ray.init(
        address="local",
        num_cpus=8,
        resources={"special": 2},
        include_dashboard=False,
        _temp_dir=temp,
        _metrics_export_port=port,
        # Metrics reach the endpoint within 2 s (Prometheus tests wait for them), not
        # Ray's 10, nor every 1 s (the agent's exports cost CPU all session).
        _system_config={"metrics_report_interval_ms": 2000, **NO_PRESTART},
        log_to_driver=False,
    )
    yield {"metrics_port": port}
    # A dashboard call the page gave up on (a 503) may still be retrying in its thread
    # (for up to the dashboard's CALL_TIMEOUT_S): Ray ends the whole process when such a
    # thread calls it after ray.shutdown (seen once, as a crashed pytest-xdist worker).
    end = time.monotonic() + 30.0
    while time.monotonic() < end and any(
            t.name == "rayqueue-dashboard-call" for t in threading.enumerate()):
        threading.Event().wait(0.05)
    ray.shutdown()


@pytest.fixture
def make_queue(ray_cluster: dict[str, Any],
               tmp_path: Path) -> Iterator[Callable[..., rayqueue.TaskQueue[Any]]]:
    """Create queues with unique names; shut each down after the test. Journaled by
    default, as the product is (SQLite FULL, in the test's temporary directory); a test
    about the in-memory queue passes ``None`` as its journal (none does today)."""
    made: list[rayqueue.TaskQueue[Any]] = []

    def make(**kwargs: Any) -> rayqueue.TaskQueue[Any]:
        name = kwargs.pop("name", None) or f"t-{uuid.uuid4().hex[:8]}"
        kwargs.setdefault("journal", str(tmp_path / f"{name}.sqlite"))
        queue = rayqueue.init(name, **kwargs)
        made.append(queue)
        return queue

    yield make
    for queue in made:
        with contextlib.suppress(rayqueue.RayQueueError):
            queue.shutdown(timeout=5)  # a test may have removed it already


@pytest.fixture(scope="module")
def module_queue(ray_cluster: dict[str, Any], tmp_path_factory: pytest.TempPathFactory,
                 request: pytest.FixtureRequest) -> Iterator[rayqueue.TaskQueue[Any]]:
    """One journaled queue for a module's tests that only enqueue, run and read their own
    tasks (never pause, kill, resize or count the whole queue): each saves a queue's start
    and stop, four actor processes, about 5 s of CPU on the 2-core machine. The module's
    ``MODULE_QUEUE`` (a dict) gives the ``init`` arguments; a test with other needs makes
    its own queue with ``make_queue``."""
    kwargs = dict(getattr(request.module, "MODULE_QUEUE", {}))
    name = f"m-{uuid.uuid4().hex[:8]}"
    kwargs.setdefault("journal", str(tmp_path_factory.mktemp(name) / "q.sqlite"))
    queue = rayqueue.init(name, **kwargs)
    yield queue
    with contextlib.suppress(rayqueue.RayQueueError):
        queue.shutdown(timeout=5)


def wait_for(condition: Callable[[], Any], timeout: float = 30.0, what: str = "") -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout``."""
    end = time.monotonic() + timeout
    pause = threading.Event()
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        pause.wait(0.05)
