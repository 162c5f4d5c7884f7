"""Rate and concurrency limits hold across worker processes (issue 17), on a real Ray.

Two workers of two slots each (twice the concurrency limit, in two processes): the
queue, not the workers, enforces the limits, so they hold whichever worker runs a
task. Each task reports its own start (and end) time as its result.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import rayqueue
from rayqueue import PoolConfig
from tests.integration.probe_tasks import Paced, TwoAtOnce

MakeQueue = Callable[..., rayqueue.TaskQueue[Any]]


def test_limits_hold_across_two_workers(make_queue: MakeQueue) -> None:
    q = make_queue(pools=[PoolConfig(min_workers=2, max_workers=2, concurrency=2)])

    spans = q.results(q.enqueue_many([TwoAtOnce(i=i) for i in range(60)]), timeout=120)
    edges = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans],
                   key=lambda x: (x[0], x[1]))  # at a tie an end comes before a start
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    print(f"peak concurrency {peak} (limit 2, 4 slots)")
    assert peak <= 2, f"{peak} ran at once under a concurrency limit of 2"

    starts = sorted(q.results(q.enqueue_many([Paced(i=i) for i in range(100)]), timeout=120))
    rate = (len(starts) - 1) / (starts[-1] - starts[0])
    # 20/s with a bucket of two tokens (a tenth of a second's worth): 100 starts take at
    # least 98 / 20 s. The upper side is what the limit promises; the lower, that the
    # queue does not over-throttle (a loaded machine only slows workers: it is loose).
    print(f"rate {rate:.2f}/s over {len(starts)} starts (limit 20/s, 2 workers)")
    assert 10.0 <= rate <= 22.0, f"{rate:.1f} starts a second under a limit of 20/s"
    assert q.stats().throttled == 0
