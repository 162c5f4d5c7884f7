"""A real multi-node Ray on this machine (``ray.cluster_utils.Cluster``), for one test
module or one script: the head, some worker nodes, and this process attached as driver.
Stopped by what it started (``Cluster.shutdown``), never by ``ray stop``."""

from __future__ import annotations

import os

os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # private throwaway clusters

import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import ray
from ray.cluster_utils import Cluster

from tests.ports import free_port
from tests.ray_fixtures import NO_PRESTART

#: Dead nodes are noticed in ~1.5 s instead of ~15 s.
FAST_HEALTH = {"health_check_period_ms": 500, "health_check_failure_threshold": 3,
               "health_check_initial_delay_ms": 0}


@contextmanager
def local_cluster(head_cpus: float, nodes: Sequence[dict[str, Any]], *,
                  fast_health: bool = False,
                  prefix: str = "rq-multi-",
                  system_config: dict[str, Any] | None = None,
                  ) -> Iterator[tuple[Cluster, list[Any]]]:
    """A head with ``head_cpus`` CPUs plus one worker node per ``add_node`` keywords in
    ``nodes``, each its own raylet, with this process connected as the driver. Yields
    the cluster and its worker nodes in the order of ``nodes``. ``system_config``: more
    Ray system settings for the head (over the fast health checks)."""
    # (the head's job agent on a port of its own: its default, 52365, is another
    # cluster's while make test runs two multi-node tests at once)
    head: dict[str, Any] = {"num_cpus": head_cpus, "include_dashboard": False,
                            "temp_dir": tempfile.mkdtemp(prefix=prefix, dir="/tmp"),
                            "dashboard_agent_listen_port": free_port()}
    head["_system_config"] = {**NO_PRESTART, **(FAST_HEALTH if fast_health else {}),
                              **(system_config or {})}
    # Cluster() writes its address to /tmp/ray/ray_current_cluster whatever temp_dir
    # says, and fails on a machine where no Ray has run yet (no /tmp/ray): `make soak`
    # or the multi-node group alone on a fresh machine.
    os.makedirs("/tmp/ray", exist_ok=True)
    cluster = Cluster(initialize_head=True, head_node_args=head)
    added = [cluster.add_node(**node) for node in nodes]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        yield cluster, added
    finally:
        ray.shutdown()
        cluster.shutdown()  # stops the raylets it started, nothing else
