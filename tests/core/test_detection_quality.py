"""Recall, false alerts and true-positive delay on injected anomalies of every kind."""

from __future__ import annotations

import numpy as np

from ingest.synthetic import INJECTED_KINDS, SyntheticStream
from scheduler import alert_record
from scheduler import detection as det
from scheduler.detection_quality import InjectedAnomaly, judge
from scheduler.registry import generate_registry

START_TS = 1_700_000_000.0


def screened_fleet(
    anomaly_sigma: tuple[float, float], interval_s: float = 0.2, seconds: float = 30.0
) -> dict:
    """A 2,000-device stream, one reading per device per ``interval_s``, screened as it comes."""
    reg = generate_registry(2_000, seed=8)
    stream = SyntheticStream(reg, seed=1, anomaly_share=2e-3, anomaly_sigma=anomaly_sigma)
    row_of = {int(d): i for i, d in enumerate(reg.device_id.tolist())}
    states = det.fresh_states(len(reg))
    records = []
    screened = 0
    now_ts = START_TS
    for _ in range(int(seconds / interval_s)):
        now_ts += interval_s
        ids, ts, values = stream.chunk(len(reg), now_ts)
        rows = np.array([row_of[int(d)] for d in ids.tolist()], dtype=np.intp)
        result = det.screen(states, rows, ts, values[:, 0], det.DetectorConfig())
        states = result.states
        screened += ts.size
        hit = np.flatnonzero(result.alert)
        if hit.size:
            # Emitted with the batch, 50 ms after its newest reading.
            records.append(alert_record.encode(ids[hit], ts[hit], result.kind[hit], now_ts + 0.05))
    return judge(stream.truth, alert_record.decode(records), screened)


def test_lasting_anomalies_at_3_to_8_noise_widths_are_recalled_with_few_false_alerts() -> None:
    # Given every kind injected at 3-8 noise widths into a fleet reporting 5 times a second
    quality = screened_fleet((3.0, 8.0))
    print(quality)
    # Then each kind was injected, shifts, stuck values, drifts and dropouts are mostly
    # alerted within 5 s, and false alerts stay under 0.5 per 1,000 readings
    assert set(quality["recall_by_kind"]) == set(INJECTED_KINDS)
    by_kind = quality["recall_by_kind"]
    assert min(by_kind[k] for k in ("shift", "stuck", "dropout")) >= 0.85
    assert by_kind["drift"] >= 0.6
    assert quality["false_alerts_per_1000"] < 0.5
    assert quality["detection_ms"]["p99"] <= 5_000.0


def test_single_reading_spikes_need_to_clear_the_spike_band() -> None:
    # Given spikes and dips of 12-16 noise widths, far past a calm device's band
    quality = screened_fleet((12.0, 16.0))
    # Then nearly all of them are alerted on their own reading
    assert quality["recall_by_kind"]["spike"] >= 0.9
    assert quality["recall_by_kind"]["dip"] >= 0.9


def test_single_reading_spikes_of_6_to_8_noise_widths_on_calm_devices_are_recalled() -> None:
    # Given spikes and dips of 6-8 noise widths on Gaussian devices (band about 5 widths)
    quality = screened_fleet((6.0, 8.0))
    # Then most are alerted on their own reading, and false alerts stay rare
    assert quality["recall_by_kind"]["spike"] >= 0.7
    assert quality["recall_by_kind"]["dip"] >= 0.7
    assert quality["false_alerts_per_1000"] < 0.5


def test_judge_counts_alerts_outside_any_anomaly_as_false_and_late_ones_as_misses() -> None:
    # Given one shift caught 1 s after onset, one spike caught 7 s late, and a stray alert
    injected = [
        InjectedAnomaly(1, "shift", 100.0, 110.0, 5.0),
        InjectedAnomaly(2, "spike", 100.0, 100.0, 5.0),
    ]
    alerts = alert_record.decode(
        [
            alert_record.encode(
                np.array([1], np.uint64), np.array([100.5]), np.array([3], np.int8), 101.0
            ),
            alert_record.encode(
                np.array([1, 2, 3], np.uint64),
                np.array([111.0, 104.0, 50.0]),
                np.array([3, 1, 1], np.int8),
                107.0,
            ),
        ]
    )
    quality = judge(injected, alerts, screened_readings=4_000)
    # Then the shift is recalled (1 s), its return is explained, the spike is a miss
    # and only the stray alert is false
    assert quality["recall_by_kind"] == {"shift": 1.0, "spike": 0.0}
    assert quality["false_alerts"] == 1
    assert quality["false_alerts_per_1000"] == 0.25
    # and the false alert is named by its kind (code 1: spike)
    assert quality["false_alerts_by_kind"] == {"spike": 1}
    assert quality["detection_ms"] == {"p50": 1000.0, "p99": 1000.0, "true_positives": 1}


def test_false_alerts_are_broken_down_by_kind_so_a_flood_names_its_cause() -> None:
    # Given no anomaly at all, and a sweep's worth of dropout alerts plus one level shift
    alerts = alert_record.decode(
        [
            alert_record.encode(
                np.arange(5, dtype=np.uint64),
                np.full(5, 10.0),
                np.array([6, 6, 6, 6, 3], np.int8),
                11.0,
            )
        ]
    )
    quality = judge([], alerts, screened_readings=1_000)
    # Then all five are false, and the breakdown says four of them were dropouts
    assert quality["false_alerts"] == 5
    assert quality["false_alerts_by_kind"] == {"dropout": 4, "level_shift": 1}
