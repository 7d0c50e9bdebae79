"""The region's sizing: the scaler's total, split by load, through the capacity ledger."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler.capacity import CapacityBudget
from scheduler.model import WorkClass
from scheduler.region_sizing import RegionObservation, RegionSizer, apportion, work_class
from scheduler.scaling import ScalingObservation


@pytest.mark.parametrize(
    ("total", "weights", "expected"),
    [
        (4, {"a": 1.0, "b": 1.0}, {"a": 2, "b": 2}),
        (3, {"a": 2.0, "b": 1.0}, {"a": 2, "b": 1}),
        (1, {"a": 0.2, "b": 0.8}, {"a": 0, "b": 1}),
        (2, {"a": 0.0, "b": 0.0}, {"a": 0, "b": 2}),  # no load anywhere: the last takes it
        (0, {"a": 5.0}, {"a": 0}),
        (3, {}, {}),
    ],
)
def test_apportion(total: int, weights: dict[str, float], expected: dict[str, int]) -> None:
    assert apportion(total, weights) == expected


@given(
    st.integers(0, 200),
    st.dictionaries(st.sampled_from("abcdef"), st.floats(0, 1e6), min_size=1),
)
def test_apportion_hands_out_exactly_the_total(total: int, weights: dict[str, float]) -> None:
    shares = apportion(total, weights)
    assert sum(shares.values()) == total
    assert all(n >= 0 for n in shares.values())


@pytest.mark.parametrize(
    ("queue", "expected"),
    [
        ("eu-west.premium", WorkClass.PREMIUM),
        ("eu-west.maintenance", WorkClass.MAINTENANCE),
        ("us-east.anomaly", WorkClass.ANOMALY),
        ("default", WorkClass.STANDARD),
    ],
)
def test_work_class_of_a_queue(queue: str, expected: WorkClass) -> None:
    assert work_class(queue) is expected


class FixedScaler:
    """A scaler that always wants ``slots`` (a baseline rule, as the simulator may use)."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.seen: list[ScalingObservation] = []

    def desired_slots(self, obs: ScalingObservation) -> int:
        self.seen.append(obs)
        return self.slots


BUDGET = CapacityBudget(total_slots=10, premium_guarantee_slots=3, standard_min_slots=1)


def observe(level: int = 0, **depth: float) -> RegionObservation:
    queues = {f"eu-west.{kind}": n for kind, n in depth.items()}
    return RegionObservation(
        now_ts=1_000.0, depth=queues, arrival_rps={}, service_rps_per_slot=10.0,
        busy_slots=0, current_slots=4, maintenance_reserved_slots=level,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("wanted", "level", "region_slots", "premium", "standard", "maintenance"),
    [
        # within the budget: every slot the scaler wants, split by backlog (3 : 1)
        (4, 0, 4, 3, 1, 0),
        # past the budget: the ledger grants the budget, standard its minimum, premium
        # (first in queue order) the rest
        (30, 0, 10, 9, 1, 0),
        # a pre-drain level of 4 leaves the data classes 6
        (30, 4, 6, 5, 1, 4),
        # a level past what the premium guarantee leaves is clipped at 7
        (30, 9, 3, 3, 0, 7),
    ],
)
def test_the_scalers_total_goes_through_the_ledger(
    wanted: int, level: int, region_slots: int, premium: int, standard: int, maintenance: int
) -> None:
    # Given a region of 10 slots (3 guaranteed to premium) with premium backlog three
    # times standard's, and a scaler that wants `wanted`
    sizer = RegionSizer(FixedScaler(wanted), BUDGET, drain_target_s=2.0)
    # When it is sized under a pre-drain level
    sizing = sizer.size(observe(level, premium=300.0, standard=100.0))
    # Then the ledger's grants are what the region gets
    assert sizing.region_slots == region_slots
    assert (sizing.by_class[WorkClass.PREMIUM], sizing.by_class[WorkClass.STANDARD]) == (
        premium,
        standard,
    )
    assert sizing.maintenance_slots == maintenance
    assert sizing.data_cap_slots == 10 - maintenance
    assert sizer.data_cap_slots(level) == 10 - maintenance


def test_the_scaler_sees_the_active_queues_summed() -> None:
    # Given a region whose worker no longer consumes its premium queue
    scaler = FixedScaler(2)
    sizer = RegionSizer(scaler, BUDGET, drain_target_s=2.0)
    # When it is sized over the standard queue only
    sizing = sizer.size(observe(premium=300.0, standard=100.5), active=["eu-west.standard"])
    # Then the scaler saw only standard's backlog, and premium is granted nothing
    assert scaler.seen[-1].queue_depth == 100
    assert sizing.by_class[WorkClass.PREMIUM] == 0
    assert sizing.region_slots == 2
