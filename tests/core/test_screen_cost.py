"""Screening's cost per held reading over routine's, from the workers' service counters."""

from __future__ import annotations

import pytest

from scheduler.screen_cost import (
    MAX_RATIO,
    SCREEN_HELD_READINGS,
    SCREEN_HELD_US,
    ScreenCostMeter,
    routine_readings,
    routine_us,
)


def counters(screen_s: float, screened: int, routine_s: float, processed: int) -> dict[str, int]:
    return {
        SCREEN_HELD_US: round(screen_s * 1e6),
        SCREEN_HELD_READINGS: screened,
        routine_us("standard"): round(routine_s * 1e6),
        routine_readings("standard"): processed,
        # premium's service is not held screening's yardstick
        routine_us("premium"): 10**9,
        routine_readings("premium"): 1,
    }


def test_no_ratio_until_both_sides_have_been_timed_long_enough() -> None:
    meter = ScreenCostMeter(("standard",))
    assert meter.update(counters(0, 0, 0, 0)) is None
    # Routine timed for 1 s, held screening for 0.1 s only: no ratio yet
    assert meter.update(counters(0.1, 10_000, 1.0, 250_000)) is None
    # Held screening timed for 0.6 s over 60,000 readings (10 us each) against routine's
    # 4 us: screening a held reading costs 2.5 times processing one
    assert meter.update(counters(0.6, 60_000, 1.0, 250_000)) == pytest.approx(2.5)


def test_new_measurements_are_blended_and_the_ratio_is_bounded() -> None:
    meter = ScreenCostMeter(("standard",))
    meter.update(counters(0, 0, 0, 0))
    meter.update(counters(1.0, 100_000, 1.0, 100_000))
    assert meter.ratio == pytest.approx(1.0)
    # A second measurement at 3x is blended in, not swapped in
    meter.update(counters(4.0, 200_000, 2.0, 200_000))
    assert meter.ratio == pytest.approx(2.0)
    # And a run of pathological tasks cannot push it past the bound
    meter.update(counters(1_000.0, 200_001, 3.0, 300_000))
    assert meter.ratio == MAX_RATIO


def test_counters_reset_read_as_no_progress() -> None:
    meter = ScreenCostMeter(("standard",))
    meter.update(counters(5.0, 500_000, 5.0, 500_000))
    assert meter.update(counters(0, 0, 0, 0)) is None
