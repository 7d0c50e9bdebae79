"""The compiled detector kernel gives the verdicts and states the numpy detector gave.

``detector_reference`` is the numpy detector as it was (one round of readings at a time);
``scheduler.detection.screen`` now runs the compiled kernel. They agree exactly on kinds
and alerts, and on numbers up to the last bits of exp and log (numpy's own vectorised
exp and log may differ from the C library's in the last place), which float32 storage
mostly rounds away.
"""

from __future__ import annotations

import numpy as np
import pytest
from detector_reference import reference_screen
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler import detection as det
from scheduler.detector_state import NARROW, K
from scheduler.errors import InvalidBatch

CFG = det.DetectorConfig()
START_TS = 1_700_000_000.0
DAY_S = 86_400.0
#: Floats the two agree on to this relative difference (and this absolute one near 0): a
#: last-place difference in exp can move a float32 field by one of its places (6e-8).
RTOL, ATOL = 1e-6, 1e-9


def _regular(rng: np.random.Generator, n: int, interval_s: float) -> np.ndarray:
    return START_TS + interval_s * np.arange(n) + rng.uniform(0, 0.2 * interval_s, n)


def _recorded_like(rng: np.random.Generator, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(ts, value) of one device per pattern: the shapes recorded series and faults take."""
    series = []
    # A daily cycle every 5 minutes over ~5 days, with a spike, a dip and a level shift.
    ts = _regular(rng, n, 300.0)
    value = 20 + 5 * np.sin(2 * np.pi * ts / DAY_S) + rng.normal(0, 0.5, n)
    value[n // 3] += 15
    value[n // 2] -= 15
    value[2 * n // 3 :] += 8
    series.append((ts, value))
    # Counts with a day/night cycle: zeros through the night, bursts by day.
    ts = _regular(rng, n, 600.0)
    rate = np.clip(6 * np.sin(2 * np.pi * ts / DAY_S), 0, None)
    value = rng.poisson(rate) * (1 + (rng.random(n) < 0.02) * rng.integers(3, 12, n))
    series.append((ts, value.astype(np.float64)))
    # Quantised readings that get stuck for a long run, then recover.
    ts = _regular(rng, n, 10.0)
    value = np.round(50 + np.cumsum(rng.normal(0, 0.3, n)), 1)
    value[n // 2 : n // 2 + 80] = value[n // 2]
    series.append((ts, value))
    # A slow drift starting mid-way; a heavy-tailed (Pareto) noise device.
    ts = _regular(rng, n, 30.0)
    value = 100 + rng.normal(0, 1, n) + np.clip(np.arange(n) - n // 2, 0, None) * 0.05
    series.append((ts, value))
    ts = _regular(rng, n, 60.0)
    series.append((ts, 10 + rng.pareto(2.5, n) * rng.choice([-1.0, 1.0], n)))
    # Irregular sampling with dropouts (long silences) and readings arriving late.
    gaps = rng.exponential(20.0, n)
    gaps[rng.random(n) < 0.01] *= 200
    ts = START_TS + np.cumsum(gaps)
    late = rng.random(n) < 0.03
    ts[late] -= rng.uniform(0, 120, late.sum())
    series.append((ts, rng.normal(0, 2, n)))
    # Repeated timestamps, and a device that only ever repeats one value.
    ts = START_TS + 15.0 * (np.arange(n) // 3)
    series.append((ts, rng.normal(5, 1, n)))
    series.append((_regular(rng, n, 5.0), np.full(n, 3.0)))
    return series


def _fleet(seed: int, n: int, metrics: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A fleet interleaving every pattern; metrics beyond the first shuffled between devices,
    with some values missing (NaN)."""
    rng = np.random.default_rng(seed)
    series = _recorded_like(rng, n)
    device = np.repeat(np.arange(len(series)), n)
    ts = np.concatenate([s[0] for s in series])
    first = np.concatenate([s[1] for s in series])
    columns = [first] + [rng.permutation(first) for _ in range(metrics - 1)]
    value = np.stack(columns, axis=1)
    value[rng.random(value.shape) < 0.05] = np.nan
    # Arrival order: by time, give or take a few seconds, as a gateway's batches come.
    arrival = np.argsort(ts + rng.uniform(0, 30.0, ts.size), kind="stable")
    return device[arrival], ts[arrival], value[arrival]


def _screen_both(
    states: np.ndarray, device: np.ndarray, ts: np.ndarray, value: np.ndarray
) -> tuple[det.ScreenResult, tuple[np.ndarray, ...]]:
    got = det.screen(states, device.astype(np.intp), ts, value, CFG)
    want = reference_screen(states, device.astype(np.intp), ts, value, CFG)
    return got, want


def _assert_agree(got: det.ScreenResult, want: tuple[np.ndarray, ...]) -> None:
    states, score, kind, alert, expected, band = want
    np.testing.assert_array_equal(got.kind, kind)
    np.testing.assert_array_equal(got.alert, alert)
    for name, a, b in (
        ("states", got.states, states),
        ("score", got.score, score),
        ("expected", got.expected, expected),
        ("band", got.band, band),
    ):
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL, err_msg=name)


@pytest.mark.parametrize(("seed", "metrics"), [(1, 1), (2, 2), (3, 3)])
def test_the_kernel_screens_recorded_like_series_as_the_numpy_detector_did(
    seed: int, metrics: int
) -> None:
    # Given a fleet of every pattern (cycles, counts, stuck, drift, bursts, dropouts, late
    # and repeated timestamps, missing values), in uneven batches as a stream is cut
    device, ts, value = _fleet(seed, 1_500, metrics)
    rng = np.random.default_rng(seed)
    cuts = np.unique(rng.integers(0, ts.size, 60))
    states = det.fresh_states(int(device.max()) + 1, metrics)
    alerts = 0
    for part in np.split(np.arange(ts.size), cuts):
        # When each batch goes through the kernel and through the numpy detector
        got, want = _screen_both(states, device[part], ts[part], value[part])
        # Then verdicts and states agree, batch after batch
        _assert_agree(got, want)
        states = want[0]
        alerts += int(got.alert.sum())
    assert alerts > 0


def test_states_not_yet_rounded_as_storage_keeps_them_are_stepped_as_before() -> None:
    # Given warm states whose float32 fields carry float64 digits storage would drop
    device, ts, value = _fleet(4, 300, 1)
    states = reference_screen(det.fresh_states(8), device, ts, value[:, 0], CFG)[0]
    cells = states.reshape(-1, K)
    cells[:, NARROW] *= 1 + 1e-9
    # When a batch of several readings per device is screened both ways
    later = np.repeat(np.arange(8), 5)
    later_ts = ts.max() + 60.0 * np.tile(np.arange(1, 6), 8)
    got, want = _screen_both(states, later, later_ts, np.linspace(-5, 5, later.size))
    # Then they agree, and every float32 field is as storage keeps it, stepped or not
    _assert_agree(got, want)
    np.testing.assert_array_equal(got.states, det.storable(got.states))


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.integers(0, 3),
            st.floats(0.0, 4_000.0),
            st.one_of(st.sampled_from([0.0, 1.0, np.nan]), st.floats(-50.0, 50.0)),
        ),
        min_size=1,
        max_size=300,
    ),
    batch=st.integers(1, 64),
)
def test_any_stream_of_readings_is_screened_as_the_numpy_detector_did(
    steps: list[tuple[int, float, float]], batch: int
) -> None:
    # Given any readings of four devices: repeats, missing values, ties and disorder in time
    device = np.array([s[0] for s in steps], dtype=np.intp)
    ts = START_TS + np.array([s[1] for s in steps])
    value = np.array([s[2] for s in steps])
    states = det.fresh_states(4)
    for start in range(0, len(steps), batch):
        part = slice(start, start + batch)
        # When they are screened in batches both ways, then both agree
        got, want = _screen_both(states, device[part], ts[part], value[part])
        _assert_agree(got, want)
        states = want[0]


def test_inputs_of_other_dtypes_and_layouts_are_screened_as_float64_ones() -> None:
    # Given a batch as float64 contiguous arrays, and the same batch in other dtypes and
    # layouts (the kernel is compiled for one signature only: screen converts)
    device, ts, value = _fleet(5, 100, 2)
    states = det.fresh_states(8, 2)
    want = det.screen(states, device.astype(np.intp), ts, value, CFG)
    wide = np.zeros((value.shape[0], 4))
    wide[:, ::2] = value
    # When the others are screened
    got = det.screen(
        np.asfortranarray(states),
        device.astype(np.int32),
        ts.astype(np.float64),
        wide[:, ::2],
        CFG,
    )
    # Then the verdicts and states are the same
    for a, b in zip(
        (got.states, got.score, got.kind, got.alert, got.expected, got.band),
        (want.states, want.score, want.kind, want.alert, want.expected, want.band),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("bad_ts", [np.nan, np.inf])
def test_a_reading_without_a_finite_time_makes_the_batch_invalid(bad_ts: float) -> None:
    # Given a batch with one reading whose ts is not a number (the kernel indexes the
    # seasonal profile by time: it must never see one)
    ts = START_TS + np.arange(4.0)
    ts[2] = bad_ts
    # When it is screened, then it is refused as an invalid batch, states untouched
    states = det.fresh_states(2)
    with pytest.raises(InvalidBatch):
        det.screen(states, np.array([0, 1, 0, 1]), ts, np.ones(4), CFG)
    np.testing.assert_array_equal(states, det.fresh_states(2))
