"""A synthetic telemetry stream from a registry's fleet, for the demo and the benchmark.

Each device reports a smooth signal (its own level and phase) plus noise.
Devices report in a fixed shuffled rotation, so at a steady rate every device
reports at a regular interval, as metering devices do; a gateway's chunk
therefore mixes devices of every tier and region.
"""

from __future__ import annotations

import json

import numpy as np
import numpy.typing as npt

from scheduler.registry import Registry


class SyntheticStream:
    """A ``spike_share`` of readings get a spike of ``spike_sigma`` noise widths, once every
    device has reported ``warmup_readings`` times (the detector's warm-up)."""

    def __init__(
        self,
        registry: Registry,
        n_metrics: int = 1,
        seed: int = 0,
        spike_share: float = 0.0,
        spike_sigma: float = 60.0,
        warmup_readings: int = 25,
    ) -> None:
        self.registry = registry
        self.n_metrics = n_metrics
        self.rng = np.random.default_rng(seed)
        self.spike_share = spike_share
        self.spike_sigma = spike_sigma
        self.warmup_readings = warmup_readings
        self.injected = 0
        self._emitted = 0
        n = len(registry)
        self._level = self.rng.normal(20.0, 5.0, size=(n, n_metrics))
        self._phase = self.rng.uniform(0, 2 * np.pi, size=n)
        self._order = self.rng.permutation(n)
        self._cursor = 0

    def chunk(
        self, n: int, now_ts: float
    ) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """``n`` readings with event times spread over the last 10 ms before ``now_ts``."""
        take = (self._cursor + np.arange(n)) % len(self._order)
        self._cursor = int((self._cursor + n) % len(self._order))
        rows = self._order[take]
        ts = now_ts - self.rng.uniform(0.0, 0.01, size=n)
        wave = np.sin(ts / 600.0 + self._phase[rows])[:, None]
        values = self._level[rows] + 3.0 * wave + self.rng.normal(0, 0.5, size=(n, self.n_metrics))
        self._emitted += n
        warm = self._emitted >= self.warmup_readings * len(self.registry)
        k = int(self.rng.binomial(n, self.spike_share)) if self.spike_share and warm else 0
        if k:
            hit = self.rng.choice(n, size=k, replace=False)
            values[hit, 0] += self.spike_sigma * 0.5 * self.rng.choice([-1.0, 1.0], size=k)
            self.injected += k
        return self.registry.device_id[rows], ts, values

    def json_readings(self, n: int, now_ts: float, metrics: tuple[str, ...]) -> list[bytes]:
        """The same signal as single JSON readings, as devices send them."""
        ids, ts, values = self.chunk(n, now_ts)
        return [
            json.dumps(
                {
                    "device_id": int(d),
                    "ts": float(t),
                    **dict(zip(metrics, map(float, v), strict=True)),
                }
            ).encode()
            for d, t, v in zip(ids, ts, values, strict=True)
        ]


def bad_readings(now_ts: float, metrics: tuple[str, ...]) -> list[bytes | dict[str, object]]:
    """One reading of each kind ingest must reject, with the reason it should give."""
    good: dict[str, object] = {"device_id": 1, "ts": now_ts, **{m: 1.0 for m in metrics}}
    missing = dict(good)
    missing.pop(metrics[0])
    return [
        b"{not json",
        missing,
        {**good, "firmware": "1.2"},
        {**good, "ts": "yesterday"},
        {**good, metrics[0]: float("nan")},
        {**good, "ts": now_ts + 86_400.0},
        {**good, "ts": now_ts - 30 * 86_400.0},
        {**good, "device_id": 10**15},
        json.dumps({**good, "pad": "x" * 10_000}).encode(),
    ]
