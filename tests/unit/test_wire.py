"""The packed wire format: leases, outcomes and enqueue requests survive the round trip."""

from __future__ import annotations

from rayqueue import NewTask, RetryPolicy
from rayqueue.core.lease import Failure, Lease, Outcome
from rayqueue.core.record import ErrorInfo, new_task_ids
from rayqueue.protocol import (
    pack_leases,
    pack_news,
    pack_outcomes,
    unpack_leases,
    unpack_news,
    unpack_outcomes,
)

POLICY = RetryPolicy(max_attempts=5, base_delay=0.5)


def test_leases_round_trip_and_share_their_policy() -> None:
    leases = [Lease(f"t{i}", i, "n", '{"a":1}', 1, 50, "p", 1.5, None if i else 3.0, POLICY,
                    bool(i % 2)) for i in range(3)]
    back = unpack_leases(pack_leases(leases))
    assert back == leases
    assert back[0].retry is back[1].retry  # pickled once per batch


def test_outcomes_round_trip_with_and_without_failures() -> None:
    outcomes = [
        Outcome("a", 1, result='{"ok":true}'),
        Outcome("b", 2, failure=Failure(ErrorInfo("KeyError", "k", "tb"), False, 2.5, "why")),
        Outcome("c", 3, failure=Failure(ErrorInfo("E", "m"))),
    ]
    assert unpack_outcomes(pack_outcomes(outcomes)) == outcomes
    assert unpack_outcomes(pack_outcomes([])) == []


def test_policies_cross_as_numbers_so_local_exception_types_do_not_break_a_batch() -> None:
    class Local(Exception):  # neither importable nor picklable by plain pickle
        pass

    policy = RetryPolicy(max_attempts=7, retry_on=(Local,))
    back = unpack_news(pack_news([NewTask("n", "{}", 50, retry=policy)]))[0]
    assert back.retry.max_attempts == 7  # the numbers the queue uses survive


def test_enqueue_requests_round_trip() -> None:
    news = [NewTask("n", "{}", 90, "gpu", 12.5, "id-1", POLICY, 30.0, None),
            NewTask("n", '{"x":"ü"}', 10, delay=5.0)]
    assert unpack_news(pack_news(news)) == news


def test_batch_ids_are_distinct_32_hex_digit_strings() -> None:
    ids = new_task_ids(10_000)
    assert len(set(ids)) == 10_000
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    assert new_task_ids(0) == []
