"""How many tasks a second the pure core moves (enqueue, claim, ack) on this machine.

Run with ``python -m bench.core_throughput [N]``. Prints figures; asserts nothing.
"""

from __future__ import annotations

import sys
import time

from rayqueue import NewTask, QueueCore


def main(n: int = 100_000, batch: int = 1_000) -> None:
    """Push ``n`` tasks through one core in batches and print per-phase rates."""
    core = QueueCore()
    news = [NewTask("bench", f'{{"i":{i}}}', 50 + i % 3) for i in range(n)]
    now = 0.0
    t0 = time.perf_counter()
    for i in range(0, n, batch):
        core.enqueue_many(news[i : i + batch], now)
    t1 = time.perf_counter()
    leases = []
    while True:
        got = core.claim("w", batch, now)
        if not got:
            break
        leases.extend(got)
    t2 = time.perf_counter()
    for i in range(0, n, batch):
        core.ack_many([(x.task_id, x.token, "null") for x in leases[i : i + batch]], now)
    t3 = time.perf_counter()
    for phase, secs in (("enqueue", t1 - t0), ("claim", t2 - t1), ("ack", t3 - t2)):
        print(f"{phase:>8}: {n / secs:>10,.0f} tasks/s  ({secs * 1e6 / n:.1f} us/task)")
    print(f"{'total':>8}: {n / (t3 - t0):>10,.0f} tasks/s end to end, batch={batch}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
