"""Rates from successive cumulative queue samples."""

from __future__ import annotations

import pytest

from scheduler.rate_meter import QueueSample, RateMeter

Q = "eu-west.standard"


def _sample(at_ts: float, depth: int, taken: int, ingested: int = 0) -> QueueSample:
    return QueueSample(at_ts, {Q: depth}, {Q: taken}, ingested, {})


@pytest.mark.parametrize(
    ("first", "second", "arrival_rps"),
    [
        # depth grows 10 in 1 s, nothing taken: 10/s arrive
        ((0.0, 0, 0), (1.0, 10, 0), 10.0),
        # depth steady while workers take 20/s: 20/s arrive
        ((0.0, 5, 100), (1.0, 5, 120), 20.0),
        # depth falls 30 while 10 taken: nothing can have arrived (clamped, not negative)
        ((0.0, 30, 0), (1.0, 0, 10), 0.0),
        # the taken hash was deleted (counter reset): read as zero, not as a negative rate
        ((0.0, 0, 500), (2.0, 8, 0), 4.0),
    ],
)
def test_arrival_is_depth_growth_plus_taken(
    first: tuple[float, int, int], second: tuple[float, int, int], arrival_rps: float
) -> None:
    meter = RateMeter(window_s=1.0)
    assert meter.update(_sample(*first)) is None
    rates = meter.update(_sample(*second))
    assert rates is not None
    assert rates.arrival_rps[Q] == pytest.approx(arrival_rps)


def test_rates_span_the_window_not_one_noisy_interval() -> None:
    # Given 0.1 s samples of a steady 20 messages/s that arrive in clumps
    meter = RateMeter(window_s=1.0)
    taken = 0
    rates = None
    for i in range(31):
        taken += 6 if i % 3 == 0 else 0
        rates = meter.update(_sample(i * 0.1, 0, taken, ingested=1000 * i))
    # Then the rate is the window's average, not 60/s or 0/s
    assert rates is not None
    assert rates.interval_s == pytest.approx(1.0)
    assert rates.arrival_rps[Q] == pytest.approx(20.0, abs=5.0)
    assert rates.ingested_rps == pytest.approx(10_000.0)
