"""Given a named load pattern, the bench paces by its integral and finds its disturbance."""

from __future__ import annotations

import pytest

from bench.window import PatternPace


def test_a_fleet_spike_paces_five_times_faster_inside_its_window() -> None:
    pace = PatternPace.named("fleet_spike", base_rps=1_000, horizon_s=60)
    assert pace.window_s == (20.0, 40.0)
    assert pace.peak_x == pytest.approx(5.0)
    assert pace(10.0) == pytest.approx(10_000, rel=1e-3)
    assert pace(30.0) - pace(20.0) == pytest.approx(50_000, rel=1e-3)
    assert pace.readings == pytest.approx(1_000 * 40 + 5_000 * 20, rel=1e-3)


def test_a_steady_pattern_has_no_disturbance() -> None:
    pace = PatternPace.named("steady", base_rps=500, horizon_s=10)
    assert pace.window_s is None
    assert pace.readings == pytest.approx(5_000, rel=1e-3)
