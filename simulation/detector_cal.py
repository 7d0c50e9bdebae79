"""How many abnormal readings the real detector needs, measured on seeded injected anomalies.

The fluid simulator does not screen a million devices' values; it asks this
module how many readings after onset ``scheduler.detection.screen`` takes to
raise its alert for a kind of anomaly, and charges that many reading
intervals to detection latency.
"""

from __future__ import annotations

import functools

import numpy as np

from scheduler.detection import DetectorConfig, fresh_states, screen
from scheduler.injection import AnomalySpec, inject, normal_traffic


@functools.lru_cache(maxsize=16)
def readings_to_detect(
    kind: str, seed: int = 0, devices: int = 200, magnitude: float = 40.0
) -> tuple[int, float]:
    """(p99 readings from onset to alert, share of injected devices detected) for ``kind``.

    Devices report about once a second with noise of 0.5–2 value units; the
    anomaly's magnitude is in the same units.
    """
    traffic = normal_traffic(seed, devices, 200, interval_s=(0.9, 1.1))
    spec = AnomalySpec(kind, n_devices=devices, magnitude=magnitude, duration_s=60.0)
    injected = inject(seed + 1, traffic.device_id, traffic.ts, traffic.value, traffic.group, spec)
    keep = injected.keep
    dev = traffic.device_id[keep].astype(np.intp)
    ts, value = traffic.ts[keep], injected.value[keep]
    result = screen(fresh_states(devices), dev, ts, value, DetectorConfig())
    needed = []
    for truth in injected.truth:
        mine = dev == truth.device_id
        after = mine & (ts >= truth.onset_ts)
        alerts = np.flatnonzero(after & result.alert.reshape(-1))
        if alerts.size:
            needed.append(int(np.count_nonzero(after & (ts <= ts[alerts[0]]))))
    if not needed:
        return 0, 0.0
    return int(np.percentile(needed, 99, method="higher")), len(needed) / len(injected.truth)
