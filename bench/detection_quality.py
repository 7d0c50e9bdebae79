"""Detector quality on synthetic fleets: false-alert rate and the incidents of a big cascade.

    uv run python bench/detection_quality.py

Prints one JSON object: alerts per 1,000 readings of normal traffic (five seeds,
1,000 devices × 200 readings each, warm-up included), and for a cascade over
two of four device groups (about 12,000 devices) how many incidents and
notifications the correlator makes.
"""

from __future__ import annotations

import json
import time

import numpy as np

from scheduler import detection as det
from scheduler.alert import Alert
from scheduler.correlation import Correlator, CorrelatorConfig
from scheduler.incident import IncidentUpdate
from scheduler.injection import AnomalySpec, inject, normal_traffic

BATCH_READINGS = 5_000


def false_alert_rate(seeds: range = range(1, 6)) -> dict[str, float | int]:
    alerts = readings = 0
    for seed in seeds:
        t = normal_traffic(seed, 1_000, 200)
        states = det.fresh_states(1_000)
        for start in range(0, t.ts.size, BATCH_READINGS):
            part = slice(start, start + BATCH_READINGS)
            r = det.screen(
                states,
                t.device_id[part].astype(np.intp),
                t.ts[part],
                t.value[part],
                det.DetectorConfig(),
            )
            states = r.states
            alerts += int(r.alert.sum())
        readings += t.ts.size
    return {
        "readings": readings,
        "false_alerts": alerts,
        "per_1000_readings": round(1_000 * alerts / readings, 4),
    }


def cascade_incidents() -> dict[str, int]:
    t = normal_traffic(31, 24_000, 60, interval_s=(1.0, 1.0), jitter=0.0, n_groups=4)
    onset = float(t.ts.min()) + 40
    spec = AnomalySpec(
        "cascade",
        n_groups=2,
        magnitude=30.0,
        cascade_kind="shift",
        earliest_onset_ts=onset,
        latest_onset_ts=onset,
    )
    injected = inject(32, t.device_id, t.ts, t.value, t.group, spec)
    states = det.fresh_states(24_000)
    corr = Correlator(CorrelatorConfig())
    notices: list[IncidentUpdate] = []
    device_alerts = 0
    for part in np.array_split(np.arange(t.ts.size), 240):
        r = det.screen(
            states,
            t.device_id[part].astype(np.intp),
            t.ts[part],
            injected.value[part],
            det.DetectorConfig(),
        )
        states = r.states
        hit = part[r.alert]
        device_alerts += hit.size
        alerts = [
            Alert(
                int(t.device_id[i]), f"g{t.group[i]}", "eu-west", float(t.ts[i]), det.KIND_NAMES[k]
            )
            for i, k in zip(hit, r.kind[r.alert], strict=True)
        ]
        notices += corr.observe(alerts, float(t.ts[part][-1]))
    notices += corr.tick(float(t.ts.max()) + CorrelatorConfig().group_interval_s)
    incidents = {u.incident.incident_id for u in notices}
    return {
        "devices_affected": len(injected.truth),
        "device_alerts": device_alerts,
        "incidents": len(incidents),
        "notifications": len(notices),
    }


if __name__ == "__main__":
    t0 = time.perf_counter()
    out = {"normal_traffic": false_alert_rate(), "cascade": cascade_incidents()}
    out["seconds"] = round(time.perf_counter() - t0, 2)
    print(json.dumps(out))
