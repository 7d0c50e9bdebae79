"""Load prediction: Holt's trend on irregular samples and the learned daily curve."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler.errors import ConfigError
from scheduler.forecast import DailyProfile, HoltForecaster

rates = st.floats(min_value=0.0, max_value=1e6, allow_nan=False)
gaps = st.floats(min_value=0.01, max_value=30.0)


def test_predict_is_zero_before_any_sample() -> None:
    assert HoltForecaster().predict(10.0) == 0.0


@pytest.mark.parametrize(
    ("slope_rps_per_s", "interval_s"),
    [(100.0, 1.0), (100.0, 0.25), (-50.0, 2.0), (0.0, 1.0)],
)
def test_linear_ramp_is_extrapolated(slope_rps_per_s: float, interval_s: float) -> None:
    # Given a clean linear ramp sampled every interval_s
    holt = HoltForecaster()
    t = 0.0
    for _ in range(int(120 / interval_s)):
        holt.update(t, 10_000.0 + slope_rps_per_s * t)
        t += interval_s
    last_t = t - interval_s
    # When predicting 10 s ahead
    predicted = holt.predict(10.0)
    # Then it lands on the ramp's continuation
    expected = 10_000.0 + slope_rps_per_s * (last_t + 10.0)
    assert predicted == pytest.approx(expected, rel=1e-3)


def test_sampling_rate_does_not_change_the_forecast_much() -> None:
    # Given the same step in load seen at 1 Hz and at 4 Hz
    def run(interval_s: float) -> float:
        holt = HoltForecaster()
        n = int(20 / interval_s)
        for i in range(n):
            t = i * interval_s
            holt.update(t, 1_000.0 if t < 10 else 2_000.0)
        return holt.predict(0.0)

    # Then both levels have moved toward the new rate by a similar amount
    assert run(1.0) == pytest.approx(run(0.25), rel=0.1)


@given(st.lists(st.tuples(gaps, rates), min_size=1, max_size=50), st.floats(0.0, 3600.0))
def test_prediction_is_never_negative(samples: list[tuple[float, float]], horizon_s: float) -> None:
    holt = HoltForecaster()
    t = 0.0
    for gap, rate in samples:
        t += gap
        holt.update(t, rate)
    prediction = holt.predict(horizon_s)
    assert prediction >= 0.0
    assert math.isfinite(prediction)


@given(rates, st.lists(gaps, min_size=1, max_size=30))
def test_constant_rate_is_predicted_exactly(rate: float, sample_gaps: list[float]) -> None:
    holt = HoltForecaster()
    t = 0.0
    for gap in sample_gaps:
        t += gap
        holt.update(t, rate)
    assert holt.predict(60.0) == pytest.approx(rate, rel=1e-9, abs=1e-9)


def test_same_instant_sample_refines_level_without_inventing_a_trend() -> None:
    holt = HoltForecaster()
    holt.update(5.0, 100.0)
    holt.update(5.0, 200.0)
    assert holt.trend_rps_per_s == 0.0
    assert 100.0 < holt.predict(0.0) < 200.0


@pytest.mark.parametrize(
    "kwargs", [{"alpha": 0.0}, {"alpha": 1.5}, {"beta": -0.1}, {"interval_s": 0.0}]
)
def test_bad_weights_are_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        HoltForecaster(**kwargs)


def _diurnal_rps(ts: float, period_s: float) -> float:
    return 1_000.0 + 800.0 * math.sin(2 * math.pi * ts / period_s)


def test_daily_profile_is_unknown_until_a_period_is_seen() -> None:
    # Given a profile with a short period, fed half of it
    profile = DailyProfile(bucket_s=10.0, period_s=100.0)
    for t in range(0, 50):
        profile.observe(float(t), _diurnal_rps(t, 100.0))
    # Then the unseen half is not guessed
    assert profile.expected(80.0) is None
    # And the seen part is known
    assert profile.expected(20.0) is not None


def test_daily_profile_recalls_yesterdays_curve() -> None:
    # Given one full period observed
    period_s = 1_000.0
    profile = DailyProfile(bucket_s=20.0, period_s=period_s)
    for t in range(0, int(period_s) + 1):
        profile.observe(float(t), _diurnal_rps(t, period_s))
    # When asked about the same time of day one period later
    for ts in (period_s + 100.0, period_s + 250.0, period_s + 700.0):
        expected = profile.expected(ts)
        # Then it answers the curve within the bucket's resolution
        assert expected is not None
        assert expected == pytest.approx(_diurnal_rps(ts, period_s), abs=30.0)


def test_a_short_spike_is_not_learned_as_part_of_the_day() -> None:
    # Given a flat day with a 60 s spike inside one 300 s bucket
    profile = DailyProfile(bucket_s=300.0, period_s=3_000.0)
    for t in range(0, 3_001):
        spike = 10_000.0 if 1_200 <= t < 1_260 else 0.0
        profile.observe(float(t), 1_000.0 + spike)
    # Then tomorrow's curve at that time is the flat rate
    assert profile.expected(3_000.0 + 1_350.0) == pytest.approx(1_000.0)


def test_daily_profile_rejects_a_bucket_longer_than_the_period() -> None:
    with pytest.raises(ConfigError):
        DailyProfile(bucket_s=200.0, period_s=100.0)


def test_relative_error_is_unknown_until_a_forecast_could_be_checked() -> None:
    holt = HoltForecaster()
    assert holt.relative_error == math.inf
    holt.update(0.0, 1_000.0)
    assert holt.relative_error == math.inf
    holt.update(1.0, 1_000.0)
    assert holt.relative_error == 0.0


def test_relative_error_is_the_noise_of_a_steady_load_and_grows_after_a_step() -> None:
    # Given a steady 10k readings/s with ±1 % noise for five minutes
    holt = HoltForecaster(alpha=0.1, beta=0.02)
    for t in range(300):
        holt.update(float(t), 10_000.0 * (1.01 if t % 2 else 0.99))
    # Then the forecast's error is about that noise
    assert 0.005 < holt.relative_error < 0.02
    # When the load steps up 30 % for a few seconds
    for t in range(300, 305):
        holt.update(float(t), 13_000.0)
    # Then the forecast is trusted far less
    assert holt.relative_error > 0.05


@pytest.mark.parametrize("weight", [0.0, 1.5])
def test_error_weight_out_of_range_is_rejected(weight: float) -> None:
    with pytest.raises(ConfigError):
        HoltForecaster(error_weight=weight)
