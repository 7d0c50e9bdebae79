"""How many abnormal readings the real detector needs, and what share it catches at all.

The fluid simulator does not screen a million devices' values; it asks this module,
for a kind of anomaly at realistic magnitudes (3-8 noise widths), how many readings
after onset ``scheduler.detection.screen`` takes to raise its alert and what share of
the affected devices it alerts on within ``max_readings``; it charges that many reading
intervals to detection latency and leaves the undetected share out of it (and of recall).
"""

from __future__ import annotations

import functools

import numpy as np

from scheduler.detection import screen
from scheduler.detector_config import DetectorConfig
from scheduler.detector_state import fresh_states
from scheduler.injection import AnomalySpec, inject, normal_traffic

#: Magnitudes tried, in noise widths; devices are split evenly between them.
MAGNITUDES_SIGMA = (3.0, 4.0, 5.0, 6.0, 7.0, 8.0)


def readings_to_detect(
    kind: str, seed: int = 0, devices: int = 240, max_readings: int = 3
) -> tuple[int, float]:
    """(p99 readings from onset to alert over detected devices, share detected) for ``kind``."""
    needed, share = detection_profile(kind, seed, devices, max_readings)
    if not needed:
        return 0, 0.0
    return int(np.percentile(needed, 99, method="higher")), share


@functools.lru_cache(maxsize=32)
def detection_profile(
    kind: str, seed: int = 0, devices: int = 240, max_readings: int = 3
) -> tuple[tuple[int, ...], float]:
    """(readings from onset to alert of each detected device, share detected) for ``kind``.

    Devices report about once a second with unit noise; the anomaly's magnitude is
    3-8 noise widths and lasts 60 s. A device counts as detected when its alert comes
    within ``max_readings`` of onset: the simulated fleet reports every 1-2 s, so 3
    readings and the screening stage's own delay are what fits the 5 s recall window.
    """
    per_magnitude = max(1, devices // len(MAGNITUDES_SIGMA))
    needed: list[int] = []
    injected = 0
    for k, sigma in enumerate(MAGNITUDES_SIGMA):
        traffic = normal_traffic(
            seed + k, per_magnitude, 300, interval_s=(0.9, 1.1), noise_std=(1.0, 1.0)
        )
        spec = AnomalySpec(kind, n_devices=per_magnitude, magnitude=sigma, duration_s=60.0)
        truth = inject(
            seed + 100 + k, traffic.device_id, traffic.ts, traffic.value, traffic.group, spec
        )
        keep = truth.keep
        dev = traffic.device_id[keep].astype(np.intp)
        ts, value = traffic.ts[keep], truth.value[keep]
        result = screen(fresh_states(per_magnitude), dev, ts, value, DetectorConfig())
        for anomaly in truth.truth:
            injected += 1
            after = (dev == anomaly.device_id) & (ts >= anomaly.onset_ts)
            alerts = np.flatnonzero(after & result.alert.reshape(-1))
            if alerts.size:
                readings = int(np.count_nonzero(after & (ts <= ts[alerts[0]])))
                if readings <= max_readings:
                    needed.append(readings)
    return tuple(sorted(needed)), len(needed) / max(injected, 1)
