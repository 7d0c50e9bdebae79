"""Baselines as documented: Celery's stock autoscaler, a Kubernetes HPA, KEDA, predictive floors."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler.errors import ConfigError
from scheduler.forecast import DailyProfile
from scheduler.hpa_baselines import HpaRule, KedaListLengthRule, list_length_for_delay
from scheduler.scaling import ScalingObservation
from scheduler.scaling_baselines import CeleryStockRule, PredictiveFloor


def obs(
    now_ts: float,
    current_slots: int,
    busy_slots: int,
    queue_depth: int = 0,
    arrival_rps: float = 0.0,
) -> ScalingObservation:
    return ScalingObservation(
        now_ts=now_ts,
        queue_depth=queue_depth,
        arrival_rps=arrival_rps,
        service_rps_per_slot=100.0,
        busy_slots=busy_slots,
        current_slots=current_slots,
    )


# Celery stock rule ------------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "busy", "waiting_tasks", "prefetch_multiplier", "expected"),
    [
        (2, 2, 0, 1, 2),  # busy, nothing reserved beyond: stay
        (2, 2, 3, 1, 5),  # three prefetched: grow to hold them
        (2, 2, 100, 1, 10),  # prefetch limit is max concurrency: grow to max
        (2, 2, 100, 4, 10),  # never above max
        (0, 0, 1, 1, 1),  # one task reserved wakes a pool of zero
        (12, 3, 0, 1, 10),  # above max (bounds changed): back to max
        (0, 0, 0, 1, 1),  # below min: the pool starts at min
    ],
)
def test_celery_grows_to_its_reserved_requests(
    current: int, busy: int, waiting_tasks: int, prefetch_multiplier: int, expected: int
) -> None:
    rule = CeleryStockRule(1, 10, prefetch_multiplier=prefetch_multiplier)
    assert rule.desired_slots(obs(0.0, current, busy, queue_depth=waiting_tasks)) == expected


def test_celery_counts_tasks_not_readings() -> None:
    # Given micro-batches of 5,000 readings, 12,000 readings waiting (3 tasks)
    rule = CeleryStockRule(1, 10, readings_per_task=5_000)
    assert rule.desired_slots(obs(0.0, 1, 1, queue_depth=12_000)) == 4


def test_celery_shrinks_only_after_keepalive_without_new_tasks() -> None:
    # Given a pool grown to 8 by a burst that ends at t=10
    rule = CeleryStockRule(1, 10, keepalive_s=30.0)
    assert rule.desired_slots(obs(10.0, 2, 2, queue_depth=6, arrival_rps=50.0)) == 8
    # When no task arrives any more and the pool is idle
    sizes = {t: rule.desired_slots(obs(float(t), 8, 0)) for t in range(11, 45)}
    # Then it holds for the keepalive, then drops to the minimum in one step
    assert all(sizes[t] == 8 for t in range(11, 41))
    assert sizes[41] == 1


def test_celery_never_shrinks_under_a_steady_trickle() -> None:
    # Given a pool of 8 and a light steady flow: one busy slot, tasks keep arriving
    rule = CeleryStockRule(1, 10, keepalive_s=30.0)
    sizes = [rule.desired_slots(obs(float(t), 8, 1, arrival_rps=5.0)) for t in range(600)]
    # Then the keepalive never expires: the high-water mark is kept (wastage)
    assert set(sizes) == {8}


def test_celery_shrink_spares_busy_processes() -> None:
    # Given 8 processes, 5 of them busy, nothing else reserved, keepalive over
    rule = CeleryStockRule(1, 10, keepalive_s=30.0)
    rule.desired_slots(obs(0.0, 8, 8, arrival_rps=1.0))
    # Then it shrinks to the busy count, not below
    assert rule.desired_slots(obs(100.0, 8, 5)) == 5


def test_celery_keepalive_must_be_positive() -> None:
    with pytest.raises(ConfigError):
        CeleryStockRule(1, 10, keepalive_s=0.0)


@given(
    st.lists(
        st.tuples(st.integers(0, 20), st.integers(0, 20), st.integers(0, 50), st.booleans()),
        min_size=1,
        max_size=40,
    )
)
def test_celery_stays_within_bounds(steps: list[tuple[int, int, int, bool]]) -> None:
    rule = CeleryStockRule(2, 12)
    for t, (current, busy, waiting, arriving) in enumerate(steps):
        o = obs(float(t), current, min(busy, current), waiting, 1.0 if arriving else 0.0)
        assert 2 <= rule.desired_slots(o) <= 12


# Kubernetes HPA rule ----------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "busy", "expected"),
    [
        (10, 8, 10),  # on target
        (10, 9, 12),  # ratio 1.125, outside the 10 % tolerance: ceil(11.25)
        (10, 10, 13),  # ceil(10 × 1.0 / 0.8) = 13
        (10, 4, 10),  # recommends 5, but the current size counts in the window
        (2, 2, 3),  # ceil(2 × 1.25)
        (20, 20, 25),
    ],
)
def test_hpa_first_sync(current: int, busy: int, expected: int) -> None:
    rule = HpaRule(1, 100, target_utilization=0.8)
    assert rule.desired_slots(obs(0.0, current, busy)) == expected


@pytest.mark.parametrize(
    ("current", "busy", "expected_recommendation"),
    [
        (10, 8, 10),  # ratio 1.0
        (10, 7, 9),  # ratio 0.875, outside tolerance: ceil(8.75)
        (100, 85, 100),  # ratio 1.0625: within tolerance, no change
        (100, 90, 113),  # ratio 1.125: ceil(112.5)
        (10, 0, 0),  # idle
    ],
)
def test_hpa_recommendation_and_tolerance(
    current: int, busy: int, expected_recommendation: int
) -> None:
    rule = HpaRule(1, 1_000, target_utilization=0.8)
    assert rule.recommend(obs(0.0, current, busy)) == expected_recommendation


def test_hpa_acts_only_every_period() -> None:
    # Given a saturated pool of 10
    rule = HpaRule(1, 100, period_s=15.0, target_utilization=0.8)
    assert rule.desired_slots(obs(0.0, 10, 10)) == 13
    # When observed between syncs, nothing changes
    assert all(rule.desired_slots(obs(float(t), 13, 13)) == 13 for t in range(1, 15))
    # At the next sync it grows again
    assert rule.desired_slots(obs(15.0, 13, 13)) == 17


def test_hpa_scale_up_rate_is_limited() -> None:
    # Given a pool of 2 whose utilization metric would ask for far more
    rule = HpaRule(1, 100, target_utilization=0.1)
    # Then one sync adds at most max(100 %, 4 pods)
    assert rule.desired_slots(obs(0.0, 2, 2)) == 6


def test_hpa_scale_down_waits_for_the_window() -> None:
    # Given a pool of 20 at target load, synced every 15 s
    rule = HpaRule(1, 100, period_s=15.0, target_utilization=0.8, scale_down_window_s=300.0)
    t = 0.0
    while t < 300:
        assert rule.desired_slots(obs(t, 20, 16)) == 20
        t += 15
    # When load falls to a quarter
    sizes: dict[float, int] = {}
    while t < 700:
        sizes[t] = rule.desired_slots(obs(t, 20, 4))
        t += 15
    # Then it holds until the last on-target recommendation leaves the window
    assert all(size == 20 for ts, size in sizes.items() if ts < 600)
    assert sizes[600.0] == 5


def test_hpa_config_is_checked() -> None:
    with pytest.raises(ConfigError):
        HpaRule(5, 1)
    with pytest.raises(ConfigError):
        HpaRule(1, 10, target_utilization=0.0)


def test_hpa_scale_up_tolerance_lets_a_high_target_grow() -> None:
    # Given a CPU target of 97 %: a saturated pool's ratio is only 1/0.97
    saturated = obs(0.0, 16, 16)
    # Then the default 10 % tolerance never grows it, a zero up-tolerance does
    assert HpaRule(1, 100, target_utilization=0.97).recommend(saturated) == 16
    rule = HpaRule(1, 100, target_utilization=0.97, scale_up_tolerance=0.0)
    assert rule.recommend(saturated) == 17
    # And scale-down keeps its own tolerance: 14 busy of 16 (ratio 0.90) holds
    assert rule.recommend(obs(0.0, 16, 14)) == 16


# KEDA listLength rule ---------------------------------------------------------


def test_keda_recommends_list_length_per_replica_in_tasks() -> None:
    # Given listLength 2 per replica and batches of 100 readings
    rule = KedaListLengthRule(1, 100, list_length=2, readings_per_task=100)
    # Then 2,000 readings waiting (20 tasks) ask for 10 replicas
    assert rule.recommend(obs(0.0, 4, 4, queue_depth=2_000)) == 10
    # And 21 tasks for 10 replicas (ratio 1.05) is within tolerance: no change
    fresh = KedaListLengthRule(1, 100, list_length=2, readings_per_task=100)
    assert fresh.recommend(obs(0.0, 10, 10, queue_depth=2_100)) == 10


def test_keda_reads_the_list_once_per_polling_interval() -> None:
    rule = KedaListLengthRule(1, 100, list_length=1, readings_per_task=1, polling_s=30.0)
    assert rule.polled_tasks(obs(0.0, 1, 1, queue_depth=3)) == 3
    # A longer queue within the interval is not seen until the next poll
    assert rule.polled_tasks(obs(29.0, 1, 1, queue_depth=50)) == 3
    assert rule.polled_tasks(obs(30.0, 1, 1, queue_depth=50)) == 50


def test_keda_behind_the_hpa_grows_at_the_default_rate_and_holds_for_the_window() -> None:
    # Given a pool of 2 and 40 tasks waiting (listLength 1)
    rule = KedaListLengthRule(1, 100, list_length=1, readings_per_task=1)
    # Then one sync grows it by at most max(100 %, 4 pods)
    assert rule.desired_slots(obs(0.0, 2, 2, queue_depth=40)) == 6
    # And the next sync still sees the 40 polled (KEDA polls every 30 s)
    assert rule.desired_slots(obs(15.0, 6, 6, queue_depth=0)) == 12
    # When the queue is gone, it holds 12 while a 40 is within the 300 s window
    sizes = {t: rule.desired_slots(obs(float(t), 12, 1)) for t in range(30, 346, 15)}
    assert all(size == 12 for t, size in sizes.items() if t <= 315)
    assert sizes[330] == 1


def test_keda_config_is_checked() -> None:
    with pytest.raises(ConfigError):
        KedaListLengthRule(1, 10, list_length=0)


@pytest.mark.parametrize(
    ("delay_s", "expected"),
    [(0.0, 1), (0.05, 1), (1.0, 12), (2.0, 24)],
)
def test_list_length_matches_a_queueing_delay(delay_s: float, expected: int) -> None:
    # listLength tasks of 5,000 readings per replica at 60,000 readings/s per replica
    assert list_length_for_delay(delay_s, 5_000, 60_000.0) == expected


# Predictive floor ---------------------------------------------------------------


def _flat_profile(rate_rps: float) -> DailyProfile:
    profile = DailyProfile(bucket_s=60.0, period_s=600.0)
    for t in range(0, 600, 10):
        profile.observe(float(t), rate_rps)
    profile.observe(600.0, rate_rps)  # closes the last bucket
    return profile


def test_predictive_floor_raises_a_reactive_rule_to_the_learned_curve() -> None:
    # Given a curve learned at 970 readings/s, 100 per slot at a 97 % target: 10 slots
    inner = CeleryStockRule(1, 20)
    rule = PredictiveFloor(inner, _flat_profile(970.0), 1, 20, target_utilization=0.97)
    # Then an idle pool is held at 10, never below
    assert rule.desired_slots(obs(1_000.0, 2, 0)) == 10
    # And the reactive rule still decides above the floor
    assert rule.desired_slots(obs(1_001.0, 10, 10, queue_depth=8)) == 18
    assert "floor from yesterday's curve" in rule.settings()


def test_predictive_floor_without_a_learned_curve_is_the_inner_rule() -> None:
    rule = PredictiveFloor(CeleryStockRule(1, 20), DailyProfile(), 1, 20, 0.97)
    assert rule.desired_slots(obs(0.0, 3, 0)) == 3
