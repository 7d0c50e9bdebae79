"""The scaling policy: demand from arrivals, backlog and forecasts; windows; bounds."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler.errors import ConfigError
from scheduler.forecast import DailyProfile
from scheduler.scaling import ScalingConfig, ScalingObservation, ScalingPolicy

SERVICE_RPS = 1_000.0


def config(**overrides: float) -> ScalingConfig:
    base: dict[str, float] = {
        "drain_target_s": 2.0,
        "min_slots": 1,
        "max_slots": 200,
        "scale_down_window_s": 60.0,
        "forecast_horizon_s": 10.0,
        "target_utilization": 1.0,
        "slot_startup_s": 0.0,
    }
    base.update(overrides)
    return ScalingConfig(**base)  # type: ignore[arg-type]


def obs(
    now_ts: float,
    arrival_rps: float,
    current_slots: int,
    queue_depth: int = 0,
    busy_slots: int | None = None,
) -> ScalingObservation:
    return ScalingObservation(
        now_ts=now_ts,
        queue_depth=queue_depth,
        arrival_rps=arrival_rps,
        service_rps_per_slot=SERVICE_RPS,
        busy_slots=current_slots if busy_slots is None else busy_slots,
        current_slots=current_slots,
    )


def steady(policy: ScalingPolicy, arrival_rps: float, slots: int, until_ts: float) -> int:
    desired = slots
    for t in range(int(until_ts)):
        desired = policy.desired_slots(obs(float(t), arrival_rps, slots))
    return desired


@pytest.mark.parametrize(
    ("arrival_rps", "queue_depth", "target_utilization", "expected_slots"),
    [
        (10_000.0, 0, 1.0, 10),  # arrivals alone
        (10_000.0, 0, 0.97, 10),  # 10 / 0.97 = 10.3: the 0.3 slot queues, no slot bought
        (10_400.0, 0, 0.97, 11),  # 10.4 / 0.97 = 10.7: past half a slot, rounded up
        (9_700.0, 0, 0.97, 10),  # exactly 10 at 97 %
        (10_000.0, 20_000, 1.0, 20),  # backlog drained in 2 s adds 10 slots
        (10_000.0, 800, 1.0, 10),  # a backlog worth 0.4 slot waits
        (10_000.0, 1_200, 1.0, 11),  # one worth 0.6 slot buys it
        (0.0, 4_000, 1.0, 2),  # backlog alone
        (0.0, 0, 1.0, 1),  # idle: the minimum
        (1_000_000.0, 0, 1.0, 200),  # capped at the region budget
    ],
)
def test_demand_table(
    arrival_rps: float, queue_depth: int, target_utilization: float, expected_slots: int
) -> None:
    policy = ScalingPolicy(config(target_utilization=target_utilization))
    desired = policy.desired_slots(obs(0.0, arrival_rps, 10, queue_depth))
    assert desired == expected_slots
    assert policy.last_decision is not None
    assert policy.last_decision.desired_slots == expected_slots


def test_a_step_in_load_is_matched_on_the_very_next_observation() -> None:
    # Given a pool sized for a steady 10k readings/s
    policy = ScalingPolicy(config())
    assert steady(policy, 10_000.0, 10, until_ts=120) == 10
    # When load steps to 30k readings/s with a second's excess queued
    desired = policy.desired_slots(obs(120.0, 30_000.0, 10, queue_depth=20_000))
    # Then the very next decision covers the new rate plus the backlog drain
    assert desired >= 30 + 10
    assert policy.last_decision is not None
    assert "scale up" in policy.last_decision.reason


def test_scale_down_waits_for_the_stabilization_window() -> None:
    # Given a pool at 30 slots for a 30k readings/s load
    policy = ScalingPolicy(config(scale_down_window_s=60.0))
    steady(policy, 30_000.0, 30, until_ts=100)
    # When load drops to 10k readings/s
    held = [policy.desired_slots(obs(100.0 + s, 10_000.0, 30)) for s in range(60)]
    # Then the pool holds for the whole window
    assert min(held) >= 30
    # And shrinks to the new demand once the window (and the forecast's
    # settling after the step) has passed
    later = [policy.desired_slots(obs(160.0 + s, 10_000.0, 30)) for s in range(40)]
    assert later[-1] == 10
    assert later == sorted(later, reverse=True)


def test_forecast_raises_capacity_ahead_of_a_ramp() -> None:
    # Given arrivals ramping by 100 readings/s every second for two minutes
    policy = ScalingPolicy(config(forecast_horizon_s=10.0))
    desired: list[int] = []
    for t in range(120):
        arrival_rps = 5_000.0 + 100.0 * t
        desired.append(policy.desired_slots(obs(float(t), arrival_rps, 10)))
    # Then capacity is already sized for where the ramp will be in ~10 s
    now_rps = 5_000.0 + 100.0 * 119
    assert desired[-1] >= math.ceil((now_rps + 800.0) / SERVICE_RPS)
    assert desired[-1] > math.ceil(now_rps / SERVICE_RPS)
    decision = policy.last_decision
    assert decision is not None
    assert decision.forecast_rps > decision.measured_rps


def test_daily_profile_prescales_before_a_predictable_peak() -> None:
    # Given a profile that learned a day whose load doubles at 600 s
    period_s = 1_200.0
    profile = DailyProfile(bucket_s=30.0, period_s=period_s)
    for t in range(int(period_s) + 1):
        profile.observe(float(t), 10_000.0 if t % period_s < 600 else 20_000.0)
    policy = ScalingPolicy(config(forecast_horizon_s=30.0), profile=profile)
    # When the next day reaches 20 s before the peak, still at the quiet rate
    desired = steady_from(policy, period_s + 300.0, period_s + 580.0, 10_000.0, 10)
    # Then capacity is already above what the current rate needs
    assert desired > 10
    decision = policy.last_decision
    assert decision is not None and decision.profile_rise_rps is not None
    assert decision.profile_rise_rps > 0


def test_without_a_learned_profile_a_flat_load_is_not_overprovisioned() -> None:
    policy = ScalingPolicy(config(target_utilization=0.97), profile=DailyProfile())
    assert steady(policy, 9_700.0, 10, until_ts=300) == 10


def steady_from(
    policy: ScalingPolicy, start_ts: float, end_ts: float, arrival_rps: float, slots: int
) -> int:
    desired = slots
    t = start_ts
    while t <= end_ts:
        desired = policy.desired_slots(obs(t, arrival_rps, slots))
        t += 1.0
    return desired


def test_a_fraction_of_a_slot_is_served_from_a_short_queue_not_a_whole_idle_slot() -> None:
    # Given a steady 5,300 readings/s: 5.3 slots, where rounding up leaves 0.7 idle
    policy = ScalingPolicy(config(slot_startup_s=1.0))
    ready, starting, queue = 5, 0, 0.0
    paid: list[int] = []
    queues: list[float] = []
    # When the pool follows the policy each second (a new slot is ready a second later)
    for t in range(600):
        ready, starting = ready + starting, 0
        queue = max(0.0, queue + 5_300.0 - ready * SERVICE_RPS)
        desired = policy.desired_slots(obs(float(t), 5_300.0, ready, int(queue)))
        if desired > ready:
            starting = desired - ready
        else:
            ready = desired
        paid.append(ready + starting)
        queues.append(queue)
    # Then it pays for well under the 6 slots rounding up would keep
    assert sum(paid[60:]) / len(paid[60:]) < 5.6
    # And the fraction waits in a short queue (under a second of one slot) emptied again and again
    assert max(queues) < SERVICE_RPS
    assert sum(q == 0.0 for q in queues[60:]) >= 50


def test_headroom_narrows_with_a_confident_forecast_and_widens_after_a_step() -> None:
    # Given a pool aiming at 90 % busy while unsure, fed a steady load with ±1 % noise
    policy = ScalingPolicy(config(target_utilization=0.9))
    first = policy.desired_slots(obs(0.0, 10_000.0, 10))
    for t in range(1, 300):
        policy.desired_slots(obs(float(t), 10_000.0 * (1.01 if t % 2 else 0.99), 10))
    # Then the first decision keeps the full 10 % headroom (10 / 0.9 = 11.1 slots)
    assert first == 11
    # And once the forecast has proved itself, the headroom is about the noise
    confident = policy.last_decision
    assert confident is not None and confident.utilization > 0.98
    assert policy.desired_slots(obs(300.0, 10_000.0, 10)) == 10
    # When the load steps up 30 % and stays there for a few seconds
    for t in range(301, 306):
        policy.desired_slots(obs(float(t), 13_000.0, 13))
    # Then the forecast's misses widen the headroom again, close to its widest
    assert policy.last_decision is not None
    assert policy.last_decision.utilization < 0.92


def test_startup_time_counts_the_backlog_built_while_slots_start() -> None:
    # Given slots that take 4 s to start and a pool 10k readings/s short
    policy = ScalingPolicy(config(slot_startup_s=4.0))
    desired = policy.desired_slots(obs(0.0, 20_000.0, 10))
    # Then the 40k readings queued meanwhile are sized to drain in 2 s
    assert desired == 20 + 20


def test_without_a_service_rate_the_pool_is_held() -> None:
    policy = ScalingPolicy(config())
    unmeasured = ScalingObservation(0.0, 5_000, 10_000.0, 0.0, 0, 7)
    assert policy.desired_slots(unmeasured) == 7
    assert policy.last_decision is not None
    assert "no service-rate" in policy.last_decision.reason


@given(
    arrival_rps=st.floats(0.0, 1e7),
    queue_depth=st.integers(0, 10**8),
    current_slots=st.integers(0, 500),
    min_slots=st.integers(0, 50),
    extra_slots=st.integers(0, 500),
)
def test_desired_is_always_within_bounds(
    arrival_rps: float, queue_depth: int, current_slots: int, min_slots: int, extra_slots: int
) -> None:
    cfg = config(min_slots=min_slots, max_slots=min_slots + extra_slots)
    policy = ScalingPolicy(cfg)
    desired = policy.desired_slots(obs(0.0, arrival_rps, current_slots, queue_depth))
    assert cfg.min_slots <= desired <= cfg.max_slots


@given(st.lists(st.floats(0.0, 1e5), min_size=2, max_size=40), st.integers(1, 20))
def test_never_below_demand_nor_the_settled_demand_in_the_window(
    rates: list[float], window_s: int
) -> None:
    # Given any arrival history
    policy = ScalingPolicy(config(scale_down_window_s=float(window_s), max_slots=10_000))
    settled: list[int] = []
    for t, rate in enumerate(rates):
        # When the policy decides
        desired = policy.desired_slots(obs(float(t), rate, 10))
        decision = policy.last_decision
        assert decision is not None
        settled.append(decision.settled_slots)
        # Then it covers this observation's demand at once
        assert desired >= decision.demand_slots
        # And every settled demand still inside the window
        assert desired >= max(settled[max(0, t - window_s) :])


def test_a_one_second_noise_peak_is_served_but_not_held() -> None:
    # Given a steady 10k readings/s
    policy = ScalingPolicy(config())
    steady(policy, 10_000.0, 10, until_ts=120)
    # When one second measures 13k
    peak = policy.desired_slots(obs(120.0, 13_000.0, 10))
    # Then that second is covered at once
    assert peak == 13
    # And the pool settles back near the steady size, not held at the peak
    after = policy.desired_slots(obs(121.0, 10_000.0, 13))
    assert after < 13


@pytest.mark.parametrize(
    "overrides",
    [
        {"min_slots": 5, "max_slots": 4},
        {"target_utilization": 0.0},
        {"target_utilization": 1.2},
        {"drain_target_s": 0.0},
        {"scale_down_window_s": -1.0},
        {"fractional_slot_tolerance": 1.0},
        {"headroom_per_forecast_error": -1.0},
        {"drained_backlog_s": -0.1},
    ],
)
def test_bad_config_is_rejected(overrides: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        config(**overrides)
