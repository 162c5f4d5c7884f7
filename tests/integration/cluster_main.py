"""A Ray cluster of its own, for the tests that need a second (and third) one on this
machine: ``python -m tests.integration.cluster_main TEMP_DIR QUEUE...``.

It starts a private local Ray in ``TEMP_DIR`` (no dashboard), creates each queue (its
SQLite journal in ``TEMP_DIR``), prints ``READY <gcs address>`` and waits for its stdin
to close; then it shuts Ray down. Ray's processes share this process's fate, so a test
stops the cluster by closing stdin (or, failing that, killing this process by its PID):
never ``ray stop``, which would stop every Ray on the machine.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import ray

import rayqueue
from rayqueue import PoolConfig


def main(temp_dir: str, queues: list[str]) -> None:
    ctx = ray.init(address="local", num_cpus=1, include_dashboard=False,
                   _temp_dir=temp_dir, log_to_driver=False)
    for name in queues:
        rayqueue.init(name, journal=os.path.join(temp_dir, f"{name}.sqlite"),
                      pools=[PoolConfig(min_workers=0, max_workers=1)])
    print("READY", ctx.address_info["gcs_address"], flush=True)
    sys.stdin.read()
    ray.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
