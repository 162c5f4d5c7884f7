"""rayqueue's metrics through a real Prometheus, and every Grafana panel's PromQL.

Prometheus (Debian's package; ``.ci/run`` installs it) scrapes the session Ray's metrics
endpoint every second; the tests read the series back through its HTTP query API.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

import rayqueue
from rayqueue import PoolConfig
from tests.integration.probe_tasks import Probe
from tests.ports import free_port
from tests.ray_fixtures import wait_for

MakeQueue = Callable[..., rayqueue.TaskQueue[Any]]
PROMETHEUS = shutil.which("prometheus")

#: Every series rayqueue exports, with the labels it must carry.
SERIES = {
    "ray_rayqueue_tasks_finished_total": {"queue", "task", "outcome"},
    "ray_rayqueue_tasks_enqueued_total": {"queue", "task"},
    "ray_rayqueue_task_wait_seconds_bucket": {"queue", "task", "le"},
    "ray_rayqueue_task_run_seconds_bucket": {"queue", "task", "le"},
    "ray_rayqueue_queue_depth": {"queue", "state"},
    "ray_rayqueue_ready_tasks": {"queue", "pool", "priority"},
    "ray_rayqueue_workers": {"queue", "pool", "node", "state"},
}


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as reply:
        return json.loads(reply.read())


@pytest.fixture(scope="module")
def prometheus(ray_cluster: dict[str, Any]) -> Iterator[str]:
    """A private Prometheus on 127.0.0.1 scraping the session Ray; yields its base URL."""
    if PROMETHEUS is None:
        _missing("the prometheus binary is not installed (apt-get install prometheus); "
                    ".ci/run installs it")
    tmp = Path(tempfile.mkdtemp(prefix="rq-prom-", dir="/tmp"))
    (tmp / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: ray\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{ray_cluster['metrics_port']}']\n")
    port = free_port()
    proc = subprocess.Popen(
        [PROMETHEUS, f"--config.file={tmp / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=(tmp / "prometheus.log").open("w"))
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _ready(base), timeout=60, what="prometheus to be ready")
        yield base
    finally:
        proc.terminate()  # ours, by PID
        proc.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)


def _ready(base: str) -> bool:
    try:
        with urllib.request.urlopen(base + "/-/ready", timeout=2) as reply:
            return reply.status == 200
    except OSError:
        return False


def query(base: str, promql: str) -> list[dict[str, Any]]:
    """Run an instant query; fails the test if Prometheus refuses the expression."""
    body = _get(f"{base}/api/v1/query?{urllib.parse.urlencode({'query': promql})}")
    assert body["status"] == "success", (promql, body)
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


@pytest.fixture(scope="module")
def worked_queue(prometheus: str, ray_cluster: dict[str, Any],
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A queue that ran successes, a retried task and a dead one; yields its name."""
    q = rayqueue.init(f"prom-{free_port()}",
                      journal=str(tmp_path_factory.mktemp("prom") / "q.sqlite"),
                      pools=[PoolConfig(min_workers=1, max_workers=1, concurrency=4)])
    try:
        handles = q.enqueue_many([Probe(value=i, sleep_s=0.01) for i in range(40)])
        handles.append(q.enqueue(Probe(value=1, fail_times=1)))
        dead = q.enqueue(Probe(fail_times=9))
        q.results(handles, timeout=60)
        wait_for(lambda: q.get(dead.id).state == "dead", what="a dead letter")
        yield q.name
    finally:
        q.shutdown(timeout=5)


def test_every_series_reaches_prometheus_with_its_labels(prometheus: str,
                                                         worked_queue: str) -> None:
    selector = f'{{queue="{worked_queue}"}}'
    for name, labels in SERIES.items():
        found = wait_for(lambda name=name: query(prometheus, name + selector), timeout=60,
                         what=f"{name} in Prometheus")
        assert labels <= set(found[0]["metric"]), (name, found[0]["metric"])
        assert "SessionName" in found[0]["metric"]  # Ray's own label, used by the board

    def succeeded() -> float:
        found = query(prometheus, f'sum(ray_rayqueue_tasks_finished_total{{queue='
                                  f'"{worked_queue}", outcome="succeeded"}})')
        return float(found[0]["value"][1]) if found else 0.0

    # The counter reaches Prometheus in steps (Ray exports, then Prometheus scrapes):
    # wait for the whole count, not for the first sample of it.
    wait_for(lambda: succeeded() >= 41, timeout=60, what="all 41 finished in Prometheus")
    # The depth gauge is sampled (queue flush 0.5 s, export, scrape 1 s): the first
    # sample after the dead letter may still read 0, so wait for one that has it.
    def dead_depth() -> float | None:
        found = query(prometheus, f'ray_rayqueue_queue_depth{{queue="{worked_queue}", '
                                  'state="dead"}')
        value = float(found[0]["value"][1]) if found else None
        return value if value else None

    assert wait_for(dead_depth, timeout=60, what="the dead depth in Prometheus") == 1


def grafana_queries() -> list[tuple[str, str]]:
    """(panel title, expression) of every target of the shipped Grafana board."""
    board = json.loads((resources.files("rayqueue") / "observability"
                        / "grafana_dashboard.json").read_text())
    return [(panel["title"], target["expr"]) for panel in board["panels"]
            for target in panel["targets"]]


def test_every_grafana_panel_query_parses_and_returns_data(prometheus: str,
                                                           worked_queue: str) -> None:
    queries = grafana_queries()
    assert len(queries) >= 10
    for title, expr in queries:
        promql = (expr.replace("$SessionName", ".+").replace("$queue", worked_queue)
                  .replace("$__rate_interval", "1m"))
        result = wait_for(lambda promql=promql: query(prometheus, promql), timeout=60,
                          what=f"data for panel {title!r}")
        assert result, title


def _missing(reason: str) -> None:
    """Skip where the real part is absent (tests/skips.py fails it in CI)."""
    pytest.skip(reason)
