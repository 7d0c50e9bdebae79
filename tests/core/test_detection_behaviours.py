"""The detector on kinds of real-world behaviour: cycles, weekly patterns, counts, shifts."""

from __future__ import annotations

import numpy as np

from scheduler import detection as det

CFG = det.DetectorConfig()
DAY_S = 86_400.0
FIVE_MIN_S = 300.0
#: A Monday, 00:00 UTC.
MONDAY_TS = 1_700_438_400.0


def screen_one(ts: np.ndarray, value: np.ndarray) -> det.ScreenResult:
    return det.screen(det.fresh_states(1), np.zeros(ts.size, dtype=np.intp), ts, value, CFG)


def daily(ts: np.ndarray, amplitude: float) -> np.ndarray:
    return amplitude * np.sin(2 * np.pi * (ts % DAY_S) / DAY_S)


def test_a_noise_free_daily_cycle_raises_nothing_once_a_day_is_learned() -> None:
    # Given ten days of an exact sine wave sampled every 5 minutes
    ts = MONDAY_TS + FIVE_MIN_S * np.arange(10 * 288)
    # When it is screened from a fresh state
    result = screen_one(ts, 20.0 + daily(ts, 10.0))
    # Then at most one alert while the first cycle is learned, and none after it
    assert result.alert[:288].sum() <= 1
    assert not result.alert[288:].any()


def test_a_seasonal_series_with_one_spike_and_one_gap_alerts_for_those_only() -> None:
    # Given 3,000 noisy 5-minute readings with a daily cycle, one spike and a 2-hour gap
    rng = np.random.default_rng(3)
    ts = MONDAY_TS + FIVE_MIN_S * np.arange(3_000)
    ts[2_000:] += 7_200.0
    value = 100.0 + daily(ts, 10.0) + rng.normal(0.0, 2.0, ts.size)
    value[1_500] += 40.0
    # When it is screened
    result = screen_one(ts, value)
    # Then once the first day is learned, the spike and the gap's end are the only alerts
    assert result.alert[:288].sum() <= 1
    alerts = (np.flatnonzero(result.alert[288:]) + 288).tolist()
    assert alerts == [1_500, 2_000]
    assert [det.KIND_NAMES[result.kind[i]] for i in alerts] == ["spike", "dropout"]


def test_a_weekly_pattern_s_weekend_is_not_an_anomaly_after_two_weeks() -> None:
    # Given five weeks of a daily cycle whose weekends run 8 noise widths lower
    rng = np.random.default_rng(4)
    ts = MONDAY_TS + FIVE_MIN_S * np.arange(35 * 288)
    weekend = ((ts - MONDAY_TS) // DAY_S) % 7 >= 5
    value = 50.0 + daily(ts, 10.0) - 8.0 * weekend + rng.normal(0.0, 1.0, ts.size)
    # When it is screened
    result = screen_one(ts, value)
    # Then after the first two weeks no weekend start or end raises an alert
    later = ts >= MONDAY_TS + 14 * DAY_S
    assert not result.alert[later].any()


def test_a_level_shift_in_a_seasonal_series_alerts_once_then_is_the_new_normal() -> None:
    # Given a week of a noisy daily cycle that steps up by 6 noise widths on day 4
    rng = np.random.default_rng(5)
    ts = MONDAY_TS + FIVE_MIN_S * np.arange(7 * 288)
    value = 50.0 + daily(ts, 5.0) + rng.normal(0.0, 1.0, ts.size)
    step_at = 4 * 288 + 100
    value[step_at:] += 6.0
    # When it is screened
    result = screen_one(ts, value)
    # Then the shift is alerted once, within a few readings, and nothing follows it
    alerts = np.flatnonzero(result.alert[step_at - 288 :]) + step_at - 288
    assert alerts.size == 1
    assert step_at <= alerts[0] <= step_at + 5
    assert det.KIND_NAMES[result.kind[alerts[0]]] == "level_shift"


def test_an_integer_count_series_with_zeros_does_not_flood() -> None:
    # Given two weeks of 5-minute event counts, mostly 0 at night, a few per reading by day
    rng = np.random.default_rng(6)
    ts = MONDAY_TS + FIVE_MIN_S * np.arange(14 * 288)
    rate = np.maximum(0.0, 0.3 + 2.5 * np.sin(2 * np.pi * (ts % DAY_S) / DAY_S))
    counts = rng.poisson(rate).astype(np.float64)
    # When it is screened
    result = screen_one(ts, counts)
    # Then the first night's zeros may be called stuck once; after that the device's
    # nightly runs are known, and alerts stay under 0.5 per 1,000 readings
    assert (counts == 0).mean() > 0.3
    stuck = result.alert & (result.kind == det.KIND_CODES["stuck"])
    assert stuck[:288].sum() <= 1
    assert not stuck[288:].any()
    assert 1_000 * result.alert.sum() / ts.size < 0.5


def test_a_calm_device_is_judged_tighter_than_one_whose_bursts_reach_far() -> None:
    # Given two 5-minute series with the same noise width over 8 days: one Gaussian, one
    # with a burst of 6-9 widths every few hours (as tweet counts and road traffic show)
    rng = np.random.default_rng(5)
    ts = MONDAY_TS + FIVE_MIN_S * np.arange(8 * 288)
    calm = 50.0 + rng.normal(0.0, 2.0, ts.size)
    bursty = 50.0 + rng.normal(0.0, 2.0, ts.size)
    bursts = np.arange(100, ts.size, 40)
    bursty[bursts] += 2.0 * rng.uniform(6.0, 9.0, bursts.size)
    # and a 7-width spike on the last day of each
    calm[-100] += 14.0
    bursty[-100] += 14.0
    # When both are screened
    quiet, loud = screen_one(ts, calm), screen_one(ts, bursty)
    # Then the calm device alerts its spike, and its band is narrower than the bursty one's
    assert quiet.alert[-100]
    assert quiet.band[-101] < loud.band[-101]
    # and once its bursts are learned the bursty device alerts few of them (its own normal)
    late = bursts[bursts > 288 * 3]
    assert loud.alert[late].mean() <= 0.2


def _screen_in_arrival_order(
    ts: np.ndarray, value: np.ndarray, arrival: np.ndarray
) -> tuple[np.ndarray, list[str]]:
    """Screen one reading per device per batch, round k taking each device's ``arrival[:, k]``
    reading (as two workers screening consecutive batches can commit them): the states
    after the last round and the kinds of every alert raised."""
    n_devices = ts.shape[0]
    states = det.fresh_states(n_devices)
    kinds: list[str] = []
    rows = np.arange(n_devices)
    for k in range(arrival.shape[1]):
        pick = arrival[:, k]
        result = det.screen(states, rows, ts[rows, pick], value[rows, pick], CFG)
        states = result.states
        kinds += [det.KIND_NAMES[kind] for kind in result.kind[result.alert]]
    return states, kinds


def test_readings_screened_a_step_out_of_time_order_raise_no_false_dropout() -> None:
    # Given 500 calm devices reporting every 10 s, each with some pairs of consecutive
    # readings screened the wrong way round (the second reading's batch committed first),
    # including the second reading of every device, before any interval was learned
    rng = np.random.default_rng(11)
    n_devices, n_readings = 500, 40
    ts = MONDAY_TS + 10.0 * np.tile(np.arange(n_readings), (n_devices, 1))
    value = rng.uniform(10.0, 30.0, (n_devices, 1)) + rng.normal(0.0, 0.5, ts.shape)
    arrival = np.tile(np.arange(n_readings), (n_devices, 1))
    arrival[:, [0, 1]] = arrival[:, [1, 0]]
    for device, k in zip(
        rng.integers(n_devices, size=2_000), rng.integers(2, n_readings - 1, 2_000), strict=True
    ):
        arrival[device, [k, k + 1]] = arrival[device, [k + 1, k]]
    # When they are screened in that order
    states, kinds = _screen_in_arrival_order(ts, value, arrival)
    # Then none is taken for silent (the warm-up's few value alerts are the noise's own)
    assert "dropout" not in kinds
    assert len(kinds) <= n_devices // 100
    # And a real silence after it is still alerted, on every device
    rows = np.arange(n_devices)
    silent_end = det.screen(states, rows, ts[:, -1] + 600.0, value[:, -1], CFG)
    assert silent_end.alert.all()
    assert {det.KIND_NAMES[k] for k in silent_end.kind} == {"dropout"}
