"""Load patterns and the fleet: seeded, reproducible bit for bit, shaped as documented."""

from __future__ import annotations

import hashlib
import time

import numpy as np
import pytest

from simulation.fleet import generate_fleet
from simulation.loads import (
    PATTERN_NAMES,
    EventBursts,
    FollowTheSun,
    Modulated,
    Steady,
    StepSpike,
    even_shares,
    one_region,
    pattern_by_name,
)

T = np.arange(0.0, 1_800.0, 0.5)


def digest(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


@pytest.mark.parametrize("name", PATTERN_NAMES)
def test_same_seed_gives_the_same_bytes(name: str) -> None:
    # Given two generators built from the same name and seed
    a = pattern_by_name(name, seed=7, horizon_s=1_800.0)
    b = pattern_by_name(name, seed=7, horizon_s=1_800.0)
    # When both are read over the same times
    # Then the rates are identical bit for bit, shaped (time, region, tier)
    ra, rb = a.rate_rps(T), b.rate_rps(T)
    assert ra.shape == (T.size, 3, 2)
    assert digest(ra) == digest(rb)
    assert np.all(ra >= 0.0)


@pytest.mark.parametrize("name", PATTERN_NAMES)
def test_slicing_time_does_not_change_values(name: str) -> None:
    # Given a pattern read over a whole run and over two halves
    p = pattern_by_name(name, seed=3, horizon_s=1_800.0)
    whole = p.rate_rps(T)
    halves = np.concatenate([p.rate_rps(T[: T.size // 2]), p.rate_rps(T[T.size // 2 :])])
    # Then a producer pacing itself chunk by chunk sees the same rates
    assert digest(whole) == digest(halves)


def test_different_seeds_differ_where_randomness_is_used() -> None:
    a = pattern_by_name("bursts", seed=1, horizon_s=1_800.0).rate_rps(T)
    b = pattern_by_name("bursts", seed=2, horizon_s=1_800.0).rate_rps(T)
    assert digest(a) != digest(b)


def test_step_spike_multiplies_only_its_region_and_window() -> None:
    # Given a steady load and a 4x spike on region 0 over [100, 200)
    base = Steady(90.0, even_shares(3))
    p = Modulated(base, StepSpike(100.0, 100.0, 4.0, one_region(3, 0)))
    r = p.rate_rps(np.array([99.0, 100.0, 199.0, 200.0]))
    # Then region 0 is 4x inside the window and 1x outside; other regions never change
    assert r[:, 0].sum(axis=1) == pytest.approx([30.0, 120.0, 120.0, 30.0])
    assert r[:, 1].sum(axis=1) == pytest.approx([30.0] * 4)


def test_follow_the_sun_peaks_at_local_afternoon_and_averages_one() -> None:
    # Given regions at longitudes 0 and 90 E
    sun = FollowTheSun((0.0, 90.0), amplitude=0.5, peak_hour=14.0)
    t = np.arange(0.0, 86_400.0, 60.0)
    f = sun.factor(t)
    # Then each peaks at 14:00 local (UTC 14:00 and 08:00) and its daily mean is 1
    assert t[np.argmax(f[:, 0])] / 3600.0 == pytest.approx(14.0, abs=0.02)
    assert t[np.argmax(f[:, 1])] / 3600.0 == pytest.approx(8.0, abs=0.02)
    assert f.mean(axis=0) == pytest.approx([1.0, 1.0], abs=1e-3)


def test_event_bursts_raise_load_only_after_an_event() -> None:
    bursts = EventBursts(seed=5, n_regions=3, horizon_s=3_600.0, rate_per_h=4.0)
    assert bursts.event_start_s.size > 0
    first = float(bursts.event_start_s[0])
    assert first > 1.0
    before = bursts.factor(np.array([first - 1.0]))
    after = bursts.factor(np.array([first + bursts.rise_s]))
    assert np.all(before == 1.0)
    assert after.max() > 1.5


def test_beyond_capacity_is_ten_times_the_base_everywhere() -> None:
    p = pattern_by_name("beyond_capacity", base_rps=1_000.0, horizon_s=300.0)
    total = p.total_rps(np.array([0.0, 150.0]))
    assert total == pytest.approx([1_000.0, 10_000.0])


def test_unknown_pattern_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="steady"):
        pattern_by_name("tsunami")


def test_million_device_fleet_is_fast_reproducible_and_resident() -> None:
    # Given the default 1,000,000-device fleet
    # (CPU time, so other jobs sharing the machine do not decide the outcome)
    started = time.process_time()
    fleet = generate_fleet(1_000_000, seed=11)
    elapsed = time.process_time() - started
    again = generate_fleet(1_000_000, seed=11)
    # Then it is built in under 2 s and identical for the same seed
    assert elapsed < 2.0
    assert len(fleet) == 1_000_000
    for col in ("tier", "group", "home_region", "allowed_mask", "lat_deg", "reading_interval_s"):
        assert digest(getattr(fleet, col)) == digest(getattr(again, col))
    # And every device may be processed at home; EU-only devices only in eu-west
    home_bit = np.left_shift(1, fleet.home_region.astype(np.int64))
    assert np.all(fleet.allowed_mask & home_bit)
    eu_only = fleet.allowed_mask == 1
    assert eu_only.sum() > 10_000
    assert np.all(fleet.home_region[eu_only] == 0)
    # And the fleet offers one reading per device per second on average
    assert fleet.rate_rps_by_region_tier().sum() == pytest.approx(1_000_000.0, rel=1e-6)
    cohorts = fleet.cohorts()
    assert np.bincount(
        cohorts.home_region * 2 + cohorts.tier, weights=cohorts.share_of_cell
    ) == pytest.approx(np.ones(6))


def test_real_detector_at_3_to_8_noise_widths_catches_shifts_and_stuck_not_small_spikes() -> None:
    # Given seeded anomalies of 3-8 noise widths screened by scheduler.detection
    from simulation.detector_cal import readings_to_detect

    spike, spike_share = readings_to_detect("spike")
    shift, shift_share = readings_to_detect("shift")
    stuck, stuck_share = readings_to_detect("stuck", max_readings=25)
    # Then a spike is caught on its own reading when at all: those past a calm device's
    # band of about 5 sigma (about half of 3-8), not the smaller ones; most shifts are
    # caught within the 3 readings that fit the 5 s window (a shift takes three readings'
    # evidence, so the smallest need a fourth), and a stuck sensor after its run
    assert spike == 1
    assert 0.4 < spike_share < 0.8
    assert shift_share > 0.6
    assert 1 <= shift <= 3
    assert stuck_share > 0.9
    assert stuck > 5
