"""Pool sizing pieces: splitting a region's slots by load, and the measured service rate."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler.model import WorkClass
from workers.pool_sizing import ServiceMeter, apportion, work_class


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


def test_service_rate_keeps_the_prior_until_enough_work_was_timed() -> None:
    meter = ServiceMeter(prior_rps=10.0)
    meter.update(0, 0.0)
    # 4 tasks in 0.2 task-seconds: too little evidence yet
    assert meter.update(4, 0.2) == 10.0
    # 25 tasks in 0.5 task-seconds: 50 tasks/s per busy slot
    assert meter.update(25, 0.5) == pytest.approx(50.0)
    # then new measurements are blended, not swapped in
    assert meter.update(45, 1.5) == pytest.approx(35.0)


def test_many_short_tasks_are_enough_evidence() -> None:
    meter = ServiceMeter(prior_rps=10.0)
    meter.update(0, 0.0)
    # 60 tasks of 5 ms each: 0.3 task-seconds, but 60 tasks
    assert meter.update(60, 0.3) == pytest.approx(200.0)


def test_a_restarted_meter_reads_as_no_progress() -> None:
    meter = ServiceMeter(prior_rps=10.0)
    meter.update(100, 9.0)
    assert meter.update(0, 0.0) == 10.0


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
