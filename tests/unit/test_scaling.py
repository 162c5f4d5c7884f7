"""Unit tests for the pure scaling policy, driven by plain numbers as the clock."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rayqueue.core.scaling import ScalingConfig, ScalingDecision, ScalingPolicy


def policy(**overrides: Any) -> ScalingPolicy:
    return ScalingPolicy(ScalingConfig(**overrides))


def test_cold_start_scales_to_demand_at_once_ignoring_upscale_delay() -> None:
    p = policy(max_workers=10, target_tasks_per_worker=4, upscale_delay_s=60)

    decision = p.decide(backlog=17, in_flight=0, current=0, now=0.0)

    assert decision == ScalingDecision(desired=5, raw=5, reason="cold_start")


def test_cold_start_from_zero_below_min_goes_to_demand_not_just_min() -> None:
    p = policy(min_workers=1, max_workers=10, target_tasks_per_worker=1)

    assert p.decide(backlog=6, in_flight=0, current=0, now=0.0).desired == 6


def test_no_cold_start_without_backlog() -> None:
    p = policy()

    assert p.decide(backlog=0, in_flight=0, current=0, now=0.0).reason == "steady"


def test_scales_up_only_once_the_upscale_delay_has_passed() -> None:
    p = policy(max_workers=8, target_tasks_per_worker=2, upscale_delay_s=5)

    assert p.decide(backlog=6, in_flight=2, current=1, now=100.0) == ScalingDecision(
        desired=1, raw=4, reason="waiting_up"
    )
    assert p.decide(backlog=6, in_flight=2, current=1, now=104.9).reason == "waiting_up"
    assert p.decide(backlog=6, in_flight=2, current=1, now=105.0) == ScalingDecision(
        desired=4, raw=4, reason="scale_up"
    )


def test_upscale_is_repeated_while_the_pool_has_not_caught_up() -> None:
    p = policy(max_workers=8, target_tasks_per_worker=1, upscale_delay_s=5)
    p.decide(backlog=4, in_flight=0, current=1, now=0.0)

    assert p.decide(backlog=4, in_flight=0, current=1, now=5.0).reason == "scale_up"
    assert p.decide(backlog=4, in_flight=0, current=1, now=6.0).reason == "scale_up"


def test_a_further_change_after_scaling_must_persist_afresh() -> None:
    p = policy(max_workers=8, target_tasks_per_worker=1, upscale_delay_s=5)
    p.decide(backlog=3, in_flight=0, current=1, now=0.0)
    assert p.decide(backlog=3, in_flight=0, current=1, now=5.0).desired == 3

    assert p.decide(backlog=6, in_flight=0, current=3, now=5.5).reason == "waiting_up"
    assert p.decide(backlog=6, in_flight=0, current=3, now=10.5).desired == 6


def test_a_dip_shorter_than_the_downscale_delay_does_not_scale_down() -> None:
    p = policy(max_workers=4, target_tasks_per_worker=1, downscale_delay_s=10)
    busy = {"backlog": 2, "in_flight": 2, "current": 4}
    idle = {"backlog": 0, "in_flight": 1, "current": 4}

    assert p.decide(**busy, now=0.0).reason == "steady"
    assert p.decide(**idle, now=1.0) == ScalingDecision(desired=4, raw=1, reason="waiting_down")
    assert p.decide(**idle, now=10.9).reason == "waiting_down"
    # Demand returns just before the delay ends: the timer is forgotten.
    assert p.decide(**busy, now=10.95).reason == "steady"
    assert p.decide(**idle, now=11.0).reason == "waiting_down"
    assert p.decide(**idle, now=20.9).reason == "waiting_down"
    assert p.decide(**idle, now=21.0) == ScalingDecision(desired=1, raw=1, reason="scale_down")


def test_a_flip_in_direction_resets_the_timer() -> None:
    p = policy(max_workers=8, target_tasks_per_worker=1, upscale_delay_s=5, downscale_delay_s=5)

    assert p.decide(backlog=6, in_flight=0, current=4, now=0.0).reason == "waiting_up"
    assert p.decide(backlog=1, in_flight=0, current=4, now=4.0).reason == "waiting_down"
    assert p.decide(backlog=6, in_flight=0, current=4, now=6.0).reason == "waiting_up"
    assert p.decide(backlog=6, in_flight=0, current=4, now=11.0).reason == "scale_up"


def test_scales_down_to_min_in_one_step_when_idle_after_the_delay() -> None:
    p = policy(min_workers=1, max_workers=6, downscale_delay_s=10)

    assert p.decide(backlog=0, in_flight=0, current=6, now=0.0).reason == "waiting_down"
    assert p.decide(backlog=0, in_flight=0, current=6, now=10.0) == ScalingDecision(
        desired=1, raw=1, reason="scale_down"
    )


def test_max_bound_holds_under_a_huge_backlog() -> None:
    p = policy(max_workers=3)

    assert p.decide(backlog=10**400, in_flight=10**6, current=0, now=0.0).desired == 3
    assert p.decide(backlog=10**9, in_flight=0, current=3, now=1.0) == ScalingDecision(
        desired=3, raw=3, reason="steady"
    )


def test_min_bound_is_kept_when_idle() -> None:
    p = policy(min_workers=2, max_workers=5, downscale_delay_s=0)

    assert p.decide(backlog=0, in_flight=0, current=2, now=0.0) == ScalingDecision(
        desired=2, raw=2, reason="steady"
    )
    assert p.decide(backlog=0, in_flight=0, current=2, now=1000.0).desired == 2


@pytest.mark.parametrize(("current", "expected"), [(1, 2), (9, 5)])
def test_current_outside_bounds_is_clipped_at_once(current: int, expected: int) -> None:
    p = policy(min_workers=2, max_workers=5, upscale_delay_s=60, downscale_delay_s=60)

    decision = p.decide(backlog=0, in_flight=3, current=current, now=0.0)

    assert (decision.desired, decision.reason) == (expected, "bounds")


def test_float_noise_does_not_ask_for_an_extra_worker() -> None:
    p = policy(max_workers=20, target_tasks_per_worker=0.7)

    assert p.decide(backlog=7, in_flight=0, current=0, now=0.0).raw == 10


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"min_workers": -1}, "min_workers"),
        ({"min_workers": True}, "min_workers"),
        ({"max_workers": 2.0}, "max_workers"),
        ({"max_workers": 0}, "max_workers"),
        ({"min_workers": 5, "max_workers": 4}, "min_workers"),
        ({"target_tasks_per_worker": 0}, "target_tasks_per_worker"),
        ({"target_tasks_per_worker": math.inf}, "target_tasks_per_worker"),
        ({"target_tasks_per_worker": math.nan}, "target_tasks_per_worker"),
        ({"upscale_delay_s": -0.1}, "upscale_delay_s"),
        ({"downscale_delay_s": math.inf}, "downscale_delay_s"),
        ({"downscale_delay_s": False}, "downscale_delay_s"),
    ],
)
def test_invalid_config_is_rejected_naming_the_field(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        ScalingConfig(**overrides)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"backlog": -1, "in_flight": 0, "current": 1, "now": 0.0},
        {"backlog": 0, "in_flight": -1, "current": 1, "now": 0.0},
        {"backlog": 0, "in_flight": 0, "current": -1, "now": 0.0},
        {"backlog": 0, "in_flight": 0, "current": 1, "now": math.nan},
    ],
)
def test_negative_inputs_are_rejected(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"backlog|in_flight|current|now"):
        policy().decide(**kwargs)


configs = st.builds(
    lambda lo, extra, target, up, down: ScalingConfig(
        min_workers=lo,
        max_workers=max(lo, 1) + extra,
        target_tasks_per_worker=target,
        upscale_delay_s=up,
        downscale_delay_s=down,
    ),
    st.integers(0, 5),
    st.integers(0, 10),
    st.floats(0.01, 100),
    st.floats(0, 30),
    st.floats(0, 30),
)
ticks = st.lists(
    st.tuples(
        st.integers(0, 10**6),
        st.integers(0, 10**4),
        st.integers(0, 50),
        st.floats(0, 20),
    ),
    max_size=30,
)


@given(configs, ticks)
def test_desired_and_raw_stay_within_bounds(
    config: ScalingConfig, steps: list[tuple[int, int, int, float]]
) -> None:
    p = ScalingPolicy(config)
    now = 0.0
    for backlog, in_flight, current, step in steps:
        now += step
        decision = p.decide(backlog=backlog, in_flight=in_flight, current=current, now=now)
        assert config.min_workers <= decision.desired <= config.max_workers
        assert config.min_workers <= decision.raw <= config.max_workers


def test_a_pool_no_node_can_host_says_why() -> None:
    from rayqueue import PoolConfig

    nodes = [
        {"Alive": True, "Resources": {"CPU": 2.0}, "Labels": {"zone": "a"}},
        {"Alive": True, "Resources": {"CPU": 4.0, "gpu_slot": 1.0}, "Labels": {"pool": "gpu"}},
        {"Alive": False, "Resources": {"CPU": 8.0, "special": 1.0}, "Labels": {}},
    ]
    assert PoolConfig().infeasible_on(nodes) is None
    assert PoolConfig(resources={"gpu_slot": 1}, label_selector={"pool": "gpu"}).infeasible_on(
        nodes) is None
    why = PoolConfig(resources={"special": 1}).infeasible_on(nodes)
    assert why == "no alive node (of 2) has CPU=0.25, special=1"  # the dead node does not count
    assert "label pool=reports" in (PoolConfig(label_selector={"pool": "reports"})
                                    .infeasible_on(nodes) or "")
    assert PoolConfig(num_cpus=3, label_selector={"zone": "a"}).infeasible_on(nodes)


def test_a_schedule_due_soon_keeps_one_warm_worker_in_a_pool_that_scales_to_zero() -> None:
    p = policy(min_workers=0, max_workers=4, downscale_delay_s=5, target_tasks_per_worker=10)
    # Idle pool, a run due soon: one worker now, not after a cold start at its time.
    assert p.decide(backlog=0, in_flight=0, current=0, now=0.0, warm=True) == ScalingDecision(
        desired=1, raw=1, reason="warm_for_schedule")
    # ... and it is not drained while the run is still coming.
    assert p.decide(backlog=0, in_flight=0, current=1, now=100.0, warm=True).desired == 1
    # Once no run is near, it goes back to zero after the usual delay.
    assert p.decide(backlog=0, in_flight=0, current=1, now=200.0).desired == 1  # waiting
    assert p.decide(backlog=0, in_flight=0, current=1, now=206.0).desired == 0
    # Demand above one worker is unaffected.
    assert p.decide(backlog=40, in_flight=0, current=0, now=300.0, warm=True).desired == 4
