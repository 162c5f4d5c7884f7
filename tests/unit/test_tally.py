"""Start waits and run times travel packed (``protocol.Tally``) and add up to what
one event per attempt gave: counts, rates, histograms and sums."""

from __future__ import annotations

import bisect

from rayqueue.aggregate import BUCKETS, MetricsAggregate
from rayqueue.protocol import Finished, Started, Tally


def test_a_tally_packs_by_task_and_outcome_and_empties_when_taken() -> None:
    tally = Tally()
    for wait in (0.0, 0.002, 0.3):
        tally.start("Pay", wait)
    tally.start("Mail", 1.5)
    tally.end("Pay", "succeeded", 0.01)
    tally.end("Pay", "succeeded", 0.02)
    tally.end("Pay", "lost", None)
    tally.end("Pay", "lost", 0.5)
    events = tally.take()
    starts = {e.task_name: list(e.waits) for e in events if isinstance(e, Started)}
    ends = {(e.task_name, e.outcome): (list(e.runs), e.unseen, e.n)
            for e in events if isinstance(e, Finished)}
    assert starts == {"Pay": [0.0, 0.002, 0.3], "Mail": [1.5]}
    assert ends == {("Pay", "succeeded"): ([0.01, 0.02], 0, 2),
                    ("Pay", "lost"): ([0.5], 1, 2)}
    assert tally.take() == []


def test_the_aggregate_counts_packed_events_as_one_per_attempt() -> None:
    tally = Tally()
    waits = [0.0005, 0.004, 0.04, 7.0, 100.0]
    runs = [0.001, 0.2, 3.0]
    for w in waits:
        tally.start("Pay", w)
    for r in runs:
        tally.end("Pay", "succeeded", r)
    tally.end("Pay", "retried", 0.3)
    tally.end("Pay", "lost", None)
    agg = MetricsAggregate("q")
    for event in tally.take():
        agg.add(event, now=100.0)
    snap = agg.snapshot(100.0)
    assert snap.counts == {"Pay": {"succeeded": 3, "retried": 1, "lost": 1}}
    assert snap.rates["succeeded"] * snap.window_s == 3
    assert snap.success_ratio == 3 / 4  # lost attempts are not finished ones
    want_waits = [0] * (len(BUCKETS) + 1)
    for w in waits:
        want_waits[bisect.bisect_left(BUCKETS, w)] += 1
    assert snap.wait_counts == want_waits and snap.wait_sum == sum(waits)
    assert sum(snap.run_counts) == 4 and abs(snap.run_sum - sum([*runs, 0.3])) < 1e-12
