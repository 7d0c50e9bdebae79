"""Anomaly injection: seeded, reproducible, and it changes exactly what its truth says."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.errors import ConfigError
from scheduler.injection import DEVICE_KINDS, AnomalySpec, inject, normal_traffic

TRAFFIC = normal_traffic(41, 200, 100, n_groups=5)


def run(spec: AnomalySpec, seed: int = 42):
    t = TRAFFIC
    return inject(seed, t.device_id, t.ts, t.value, t.group, spec)


def test_normal_traffic_is_time_ordered_and_reproducible() -> None:
    again = normal_traffic(41, 200, 100, n_groups=5)
    assert np.all(np.diff(TRAFFIC.ts) >= 0)
    np.testing.assert_array_equal(again.value, TRAFFIC.value)
    assert np.bincount(TRAFFIC.device_id.astype(np.intp)).tolist() == [100] * 200


@settings(max_examples=20, deadline=None)
@given(kind=st.sampled_from(DEVICE_KINDS), seed=st.integers(0, 2**31))
def test_injection_is_reproducible_and_touches_only_the_truth_devices(kind: str, seed: int) -> None:
    spec = AnomalySpec(kind, n_devices=7, magnitude=5.0, duration_s=300.0)
    first, second = run(spec, seed), run(spec, seed)
    np.testing.assert_array_equal(first.value, second.value)
    assert first.truth == second.truth
    assert len(first.truth) == 7
    changed = (first.value != TRAFFIC.value) | ~first.keep
    truth_devices = {t.device_id for t in first.truth}
    assert set(np.unique(TRAFFIC.device_id[changed]).tolist()) <= truth_devices
    # And nothing changes before a device's onset
    for t in first.truth:
        before = (TRAFFIC.device_id == t.device_id) & (TRAFFIC.ts < t.onset_ts)
        assert not changed[before].any()


def test_a_spike_changes_only_the_onset_reading_by_its_magnitude() -> None:
    injected = run(AnomalySpec("spike", n_devices=3, magnitude=9.0))
    delta = injected.value - TRAFFIC.value
    assert np.count_nonzero(delta) == 3
    np.testing.assert_allclose(delta[delta != 0], 9.0)
    assert set(TRAFFIC.ts[delta != 0].tolist()) == {t.onset_ts for t in injected.truth}


def test_a_stuck_device_repeats_its_onset_value_for_the_duration() -> None:
    injected = run(AnomalySpec("stuck", n_devices=1, duration_s=200.0))
    (truth,) = injected.truth
    mine = TRAFFIC.device_id == truth.device_id
    window = mine & (TRAFFIC.ts >= truth.onset_ts) & (TRAFFIC.ts < truth.onset_ts + 200.0)
    assert window.sum() >= 2
    assert np.unique(injected.value[window]).size == 1


def test_a_dropout_removes_the_readings_of_its_window() -> None:
    injected = run(AnomalySpec("dropout", n_devices=4, duration_s=500.0))
    dropped = TRAFFIC.device_id[~injected.keep]
    assert set(np.unique(dropped).tolist()) == {t.device_id for t in injected.truth}
    np.testing.assert_array_equal(injected.value, TRAFFIC.value)


def test_a_cascade_hits_every_device_of_the_chosen_groups_within_its_window() -> None:
    spec = AnomalySpec("cascade", n_groups=2, window_s=10.0, cascade_kind="spike")
    injected = run(spec)
    hit_groups = set(
        TRAFFIC.group[np.isin(TRAFFIC.device_id, [t.device_id for t in injected.truth])]
    )
    assert len(hit_groups) == 2
    onsets = [t.onset_ts for t in injected.truth]
    # Every device of those groups still reporting after the window is hit
    later = np.isin(TRAFFIC.group, list(hit_groups)) & (TRAFFIC.ts > max(onsets))
    assert set(np.unique(TRAFFIC.device_id[later]).tolist()) <= {
        t.device_id for t in injected.truth
    }
    # Each onset snaps to the device's next reading, at most one interval after the window
    assert max(onsets) - min(onsets) <= 10.0 + TRAFFIC.interval_s.max() * 1.1


def test_an_unknown_kind_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        run(AnomalySpec("meteor"))
