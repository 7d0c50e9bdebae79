"""Per-reading cost of the detector kernel, ``scheduler.detection.screen``.

    uv run python bench/detection_cost.py [--devices 5000] [--batches 20]

Warms ``--devices`` devices on 60 readings each, then times batches of one reading
per device (5,000-reading batches of 5,000 devices by default, as the screening stage
sees them) and prints one JSON object with the best and median microseconds per
reading and the state size per (device, metric). Kernel only: no Redis, no codec.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from scheduler import detection as det
from scheduler.injection import normal_traffic

WARM_READINGS = 60


def measure(devices: int, batches: int) -> dict[str, float | int]:
    traffic = normal_traffic(19, devices, WARM_READINGS)
    config = det.DetectorConfig()
    states = det.fresh_states(devices)
    for part in np.array_split(np.arange(traffic.ts.size), WARM_READINGS):
        states = det.screen(
            states,
            traffic.device_id[part].astype(np.intp),
            traffic.ts[part],
            traffic.value[part],
            config,
        ).states
    rng = np.random.default_rng(1)
    now_ts = float(traffic.ts[-1])
    per_reading_us = []
    for batch in range(batches):
        device = rng.permutation(devices).astype(np.intp)
        ts = np.full(devices, now_ts + 60.0 * (batch + 1))
        value = rng.normal(0.0, 1.0, devices)
        start = time.perf_counter()
        states = det.screen(states, device, ts, value, config).states
        per_reading_us.append(1e6 * (time.perf_counter() - start) / devices)
    per_reading_us.sort()
    return {
        "devices": devices,
        "batch_readings": devices,
        "batches": batches,
        "us_per_reading_best": round(per_reading_us[0], 3),
        "us_per_reading_median": round(per_reading_us[len(per_reading_us) // 2], 3),
        "state_bytes_per_metric": det.STATE_BYTES,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=5_000)
    parser.add_argument("--batches", type=int, default=20)
    args = parser.parse_args()
    print(json.dumps(measure(args.devices, args.batches)))
