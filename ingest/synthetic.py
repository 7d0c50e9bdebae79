"""A synthetic telemetry stream from a registry's fleet, for the demo and the benchmark.

Each device reports a smooth signal (its own level and phase) plus noise.
Devices report in a fixed shuffled rotation, so at a steady rate every device
reports at a regular interval, as metering devices do; a gateway's chunk
therefore mixes devices of every tier and region.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import numpy.typing as npt

from scheduler.detection_quality import InjectedAnomaly
from scheduler.registry import Registry

NOISE_STD = 0.5
#: A chunk's event times spread over this long before its ``now_ts``.
CHUNK_SPAN_S = 0.01
#: Noise values drawn once per stream (8 MB), taken a stretch at a time (``_noise``).
NOISE_POOL = 1 << 20
#: Kinds ``anomaly_share`` injects, in turn; "dropout" withholds a device's readings.
INJECTED_KINDS: tuple[str, ...] = ("spike", "dip", "shift", "drift", "stuck", "dropout")
_LASTING = {"shift": 0, "drift": 1, "stuck": 2, "dropout": 3}


class SyntheticStream:
    """A ``spike_share`` of readings get a spike of ``spike_sigma`` noise widths, once every
    device has reported ``warmup_readings`` times (the detector's warm-up).

    An ``anomaly_share`` of readings start an anomaly of each kind in ``INJECTED_KINDS`` in
    turn, at a magnitude drawn from ``anomaly_sigma`` noise widths; a shift, drift or stuck
    value lasts ``anomaly_readings`` of the device's readings, a dropout ``dropout_readings``
    (its slots go to other devices, so the offered count is unchanged). Every injected
    anomaly is in ``truth`` for the bench to judge the alerts against.
    """

    def __init__(
        self,
        registry: Registry,
        n_metrics: int = 1,
        seed: int = 0,
        spike_share: float = 0.0,
        spike_sigma: float = 60.0,
        warmup_readings: int = 25,
        anomaly_share: float = 0.0,
        anomaly_sigma: tuple[float, float] = (3.0, 8.0),
        anomaly_readings: int = 30,
        dropout_readings: int = 10,
    ) -> None:
        self.registry = registry
        self.n_metrics = n_metrics
        self.rng = np.random.default_rng(seed)
        self.spike_share = spike_share
        self.spike_sigma = spike_sigma
        self.warmup_readings = warmup_readings
        self.anomaly_share = anomaly_share
        self.anomaly_sigma = anomaly_sigma
        self.anomaly_readings = anomaly_readings
        self.dropout_readings = dropout_readings
        self.injected = 0
        self.truth: list[InjectedAnomaly] = []
        self._emitted = 0
        n = len(registry)
        self._level = self.rng.normal(20.0, 5.0, size=(n, n_metrics))
        self._phase = self.rng.uniform(0, 2 * np.pi, size=n)
        self._sin_phase, self._cos_phase = np.sin(self._phase), np.cos(self._phase)
        self._noise_pool = self.rng.normal(0, NOISE_STD, size=NOISE_POOL)
        self._order = self.rng.permutation(n)
        self._cursor = 0
        # A lasting anomaly per device: its kind (-1: none), readings so far, size, held value.
        self._lasting = np.full(n, -1, dtype=np.int8)
        self._age = np.zeros(n, dtype=np.int64)
        self._size = np.zeros(n)
        self._held = np.zeros(n)
        self._truth_at = np.full(n, -1, dtype=np.int64)
        self._started = 0

    def chunk(
        self, n: int, now_ts: float
    ) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """``n`` readings with event times spread over the last 10 ms before ``now_ts``,
        rising along the chunk (one random instant in each of ``n`` equal slices), as a
        gateway passes readings on in the order they came: a consumer sorting them by
        event time (oldest first) finds them sorted, and a stable sort of sorted input
        takes linear time."""
        end = self._cursor + n
        if end <= len(self._order):
            rows = self._order[self._cursor : end]
        else:
            rows = self._order[(self._cursor + np.arange(n)) % len(self._order)]
        self._cursor = int(end % len(self._order))
        slices = (np.arange(n) + self.rng.uniform(0.0, 1.0, size=n)) / n
        ts = now_ts - CHUNK_SPAN_S * (1.0 - slices)
        warm = self._emitted + n >= self.warmup_readings * len(self.registry)
        if self.anomaly_share and warm:
            self._start_anomalies(rows, ts)
        rows = self._withhold_dropouts(rows, ts)
        wave = self._wave(rows, ts)[:, None]
        noise = self._noise(n)
        values = self._level[rows] + 3.0 * wave + noise
        self._apply_lasting(rows, ts, values)
        self._emitted += n
        k = int(self.rng.binomial(n, self.spike_share)) if self.spike_share and warm else 0
        if k:
            hit = self.rng.choice(n, size=k, replace=False)
            sign = self.rng.choice([-1.0, 1.0], size=k)
            values[hit, 0] += self.spike_sigma * NOISE_STD * sign
            self.injected += k
            for i, up in zip(hit.tolist(), sign.tolist(), strict=True):
                self._record(int(rows[i]), "spike" if up > 0 else "dip", float(ts[i]))
                self._truth_at[rows[i]] = -1
        return self.registry.device_id[rows], ts, values

    def _noise(self, n: int) -> npt.NDArray[np.float64]:
        """``n`` readings' noise: a stretch of a pool drawn once, from a random place (a
        draw per reading was a fifth of a chunk's time); a chunk larger
        than the pool is drawn afresh."""
        size = n * self.n_metrics
        if size > NOISE_POOL // 2:
            return self.rng.normal(0, NOISE_STD, size=(n, self.n_metrics))
        start = int(self.rng.integers(0, NOISE_POOL - size))
        return self._noise_pool[start : start + size].reshape(n, self.n_metrics)

    def _wave(
        self, rows: npt.NDArray[np.int64], ts: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float64]:
        """sin(ts / 600 + phase) of each reading's device, from the sine and cosine of each
        device's phase and of the chunk's first instant: a chunk spans 10 ms, so the rest
        of the angle is under 2e-5 and its first-order term leaves an error under 1e-9.
        (``np.sin`` of every reading was a quarter of a chunk's time.)"""
        a0 = float(ts[0]) / 600.0
        s0, c0 = math.sin(a0), math.cos(a0)
        sp, cp = self._sin_phase[rows], self._cos_phase[rows]
        at_a0 = s0 * cp + c0 * sp
        slope = c0 * cp - s0 * sp
        wave: npt.NDArray[np.float64] = at_a0 + slope * ((ts - ts[0]) / 600.0)
        return wave

    def _record(self, row: int, kind: str, onset_ts: float, sigma: float = 0.0) -> None:
        end_ts = onset_ts if kind in ("spike", "dip") else float("inf")
        device = int(self.registry.device_id[row])
        self.truth.append(
            InjectedAnomaly(device, kind, onset_ts, end_ts, sigma or self.spike_sigma)
        )
        self._truth_at[row] = len(self.truth) - 1

    def _start_anomalies(self, rows: npt.NDArray[np.int64], ts: npt.NDArray[np.float64]) -> None:
        k = int(self.rng.binomial(rows.size, self.anomaly_share))
        free = np.flatnonzero(self._lasting[rows] < 0)
        for i in self.rng.choice(free, size=min(k, free.size), replace=False).tolist():
            kind = INJECTED_KINDS[self._started % len(INJECTED_KINDS)]
            self._started += 1
            sigma = float(self.rng.uniform(*self.anomaly_sigma))
            row = int(rows[i])
            self._record(row, kind, float(ts[i]), sigma)
            self.injected += 1
            sign = 1.0 if kind != "dip" else -1.0
            self._size[row] = sign * sigma * NOISE_STD
            self._age[row] = 0
            self._held[row] = np.nan
            self._lasting[row] = _LASTING.get(kind, 4)

    def _withhold_dropouts(
        self, rows: npt.NDArray[np.int64], ts: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.int64]:
        """Rows of devices in a dropout report for random other devices instead."""
        silent = np.flatnonzero(self._lasting[rows] == _LASTING["dropout"])
        if not silent.size:
            return rows
        self._advance(rows[silent], ts[silent], self.dropout_readings)
        rows = rows.copy()
        rows[silent] = self.rng.integers(0, len(self.registry), silent.size)
        return rows

    def _apply_lasting(
        self,
        rows: npt.NDArray[np.int64],
        ts: npt.NDArray[np.float64],
        values: npt.NDArray[np.float64],
    ) -> None:
        code = self._lasting[rows]
        one_off = np.flatnonzero(code == 4)
        values[one_off, 0] += self._size[rows[one_off]]
        self._lasting[rows[one_off]] = -1
        for kind in ("shift", "drift", "stuck"):
            at = np.flatnonzero(code == _LASTING[kind])
            if not at.size:
                continue
            dev = rows[at]
            if kind == "shift":
                values[at, 0] += self._size[dev]
            elif kind == "drift":
                ramp = np.minimum(1.0, (self._age[dev] + 1) / (self.anomaly_readings / 2))
                values[at, 0] += self._size[dev] * ramp
            else:
                held = np.where(np.isnan(self._held[dev]), values[at, 0], self._held[dev])
                self._held[dev] = held
                values[at, 0] = held
            self._advance(dev, ts[at], self.anomaly_readings)

    def _advance(self, dev: npt.NDArray[np.int64], ts: npt.NDArray[np.float64], last: int) -> None:
        """Count one abnormal reading per device; close anomalies at their last one."""
        self._age[dev] += 1
        done = self._age[dev] >= last
        for row, end_ts in zip(dev[done].tolist(), ts[done].tolist(), strict=True):
            at = int(self._truth_at[row])
            if at >= 0:
                self.truth[at] = dataclasses.replace(self.truth[at], end_ts=end_ts)
            self._lasting[row] = -1
            self._truth_at[row] = -1

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
