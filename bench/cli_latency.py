"""How long ``rayqueue status`` takes against a running queue, end to end (issue 16, item 5).

Run with ``python -m bench.cli_latency [--runs 5] [--address HOST:PORT --queue NAME]``.
Without an address it starts a private local Ray with a queue in a process of its own
(stopped by closing its stdin, never ``ray stop``), then times each run of the command:
a new process, imports, attaching to the cluster, three calls, the tables, and exit.
Prints the p50 (and the spread) of the runs; asserts nothing (the goal is < 1.5 s on an
idle machine).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

#: The process that holds the cluster: prints ``READY <gcs address>``, waits for stdin.
_HOLDER = """
import os, sys, ray, rayqueue
temp = sys.argv[1]
ctx = ray.init(address="local", num_cpus=1, include_dashboard=False, _temp_dir=temp,
               log_to_driver=False)
rayqueue.init("bench-cli", journal=os.path.join(temp, "bench-cli.sqlite"),
              pools=[rayqueue.PoolConfig(min_workers=0, max_workers=1)])
print("READY", ctx.address_info["gcs_address"], flush=True)
sys.stdin.read()
ray.shutdown()
"""


def _cpu() -> float:
    """CPU seconds of this process's finished children (the runs of the command)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _time_status(address: str, queue: str, runs: int) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds of each run."""
    times, cpus = [], []
    for _ in range(runs):
        t0, c0 = time.perf_counter(), _cpu()
        done = subprocess.run([sys.executable, "-m", "rayqueue.cli", "--address", address,
                               "-q", queue, "status"], capture_output=True, text=True,
                              check=False)
        times.append(time.perf_counter() - t0)
        cpus.append(_cpu() - c0)
        if done.returncode != 0:
            raise SystemExit(f"rayqueue status failed: {done.stderr.strip()}")
    return times, cpus


def main(argv: list[str] | None = None) -> None:
    """Time ``rayqueue status``; print the p50 of the runs."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--address", help="a running cluster (default: start a private one)")
    p.add_argument("--queue", default="bench-cli")
    args = p.parse_args(argv)
    holder = None
    address = args.address
    if address is None:
        env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}
        holder = subprocess.Popen(
            [sys.executable, "-c", _HOLDER, tempfile.mkdtemp(prefix="rq-bench-", dir="/tmp")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        assert holder.stdout is not None
        for line in holder.stdout:
            if line.startswith("READY "):
                address = line.split()[1]
                break
        if address is None:
            raise SystemExit("the benchmark's Ray cluster did not start")
    try:
        times, cpus = _time_status(address, args.queue, args.runs)
    finally:
        if holder is not None:
            assert holder.stdin is not None
            holder.stdin.close()
            try:
                holder.wait(timeout=60)
            except subprocess.TimeoutExpired:
                holder.kill()  # by its PID: its Ray processes share its fate
    # CPU time says what a busy machine hides: wall time on an idle one is about it.
    print(f"rayqueue status: p50 {statistics.median(times):.2f} s over {len(times)} runs "
          f"(min {min(times):.2f}, max {max(times):.2f}; CPU p50 "
          f"{statistics.median(cpus):.2f} s; goal < 1.5 s on an idle machine)")


if __name__ == "__main__":
    main()
