"""Anomaly injection: seeded normal traffic and seeded anomalies in columnar streams.

Tests and benchmarks use these to know the ground truth (which device, what kind,
when) that the detector and the correlator are judged against.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from scheduler.errors import ConfigError

F64 = npt.NDArray[np.float64]
U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]
BOOL = npt.NDArray[np.bool_]

#: Kinds ``inject`` can apply to a device; "cascade" applies one of these to whole groups.
DEVICE_KINDS: tuple[str, ...] = ("spike", "dip", "shift", "drift", "stuck", "dropout")


@dataclass(frozen=True)
class Traffic:
    """Readings of a fleet, in time order as ingest sees them; ``group`` is a group code."""

    device_id: U64
    ts: F64
    value: F64
    group: I64
    #: Per device (indexed by device id): its noise standard deviation and reading interval.
    noise_std: F64
    interval_s: F64


def normal_traffic(
    rng_seed: int,
    n_devices: int,
    readings_per_device: int,
    *,
    start_ts: float = 1_700_000_000.0,
    interval_s: tuple[float, float] = (1.0, 60.0),
    noise_std: tuple[float, float] = (0.5, 2.0),
    amplitude_std: tuple[float, float] = (0.0, 2.0),
    period_readings: tuple[float, float] = (500.0, 5_000.0),
    jitter: float = 0.1,
    n_groups: int = 10,
) -> Traffic:
    """Per-device sinusoid plus Gaussian noise at a per-device, slightly jittered interval.

    The cycle is slow relative to the reading rate (``period_readings``), as a daily
    cycle is for devices that report every few seconds; the amplitude is given in
    multiples of the device's own noise.
    """
    rng = np.random.default_rng(rng_seed)
    interval = rng.uniform(*interval_s, n_devices)
    sigma = rng.uniform(*noise_std, n_devices)
    amplitude = rng.uniform(*amplitude_std, n_devices) * sigma
    period_s = rng.uniform(*period_readings, n_devices) * interval
    phase = rng.uniform(0, 2 * np.pi, n_devices)
    base = rng.uniform(-100.0, 100.0, n_devices)
    group = rng.integers(0, n_groups, n_devices)

    steps = interval[:, None] * (
        1.0 + rng.uniform(-jitter, jitter, (n_devices, readings_per_device))
    )
    ts = start_ts + rng.uniform(0, interval)[:, None] + np.cumsum(steps, axis=1)
    cycle = amplitude[:, None] * np.sin(
        2 * np.pi * (ts - start_ts) / period_s[:, None] + phase[:, None]
    )
    noise = rng.normal(0.0, 1.0, ts.shape) * sigma[:, None]
    value = base[:, None] + cycle + noise

    device = np.repeat(np.arange(n_devices, dtype=np.uint64), readings_per_device)
    order = np.argsort(ts.reshape(-1), kind="stable")
    return Traffic(
        device_id=device[order],
        ts=ts.reshape(-1)[order],
        value=value.reshape(-1)[order],
        group=np.repeat(group, readings_per_device)[order].astype(np.int64),
        noise_std=sigma,
        interval_s=interval,
    )


@dataclass(frozen=True)
class AnomalySpec:
    """What to inject. Magnitudes are in value units; times in epoch seconds."""

    kind: str
    n_devices: int = 1
    #: Spike/dip height, shift size, drift total over ``duration_s``.
    magnitude: float = 10.0
    #: How long a shift, drift, stuck or dropout lasts (a drift then holds its offset).
    duration_s: float = 600.0
    #: Onsets are drawn in [earliest, latest]; by default the middle half of each device's
    #: own readings (of the whole stream for a cascade, which strikes at one moment).
    earliest_onset_ts: float | None = None
    latest_onset_ts: float | None = None
    #: Cascade: how many groups, onsets spread over ``window_s``, the kind each device shows.
    n_groups: int = 2
    window_s: float = 10.0
    cascade_kind: str = "shift"


class Truth(NamedTuple):
    """One injected anomaly: the device, the kind, and the event time of its first reading."""

    device_id: int
    kind: str
    onset_ts: float


@dataclass(frozen=True)
class Injected:
    """The stream after injection: new values, which readings survive, and the truth."""

    value: F64
    keep: BOOL
    truth: list[Truth]


def inject(
    rng_seed: int, device_id: U64, ts: F64, value: F64, group: I64, spec: AnomalySpec
) -> Injected:
    """Apply ``spec`` at seeded positions; the inputs are not modified."""
    if spec.kind not in (*DEVICE_KINDS, "cascade"):
        raise ConfigError(f"unknown anomaly kind {spec.kind!r}")
    rng = np.random.default_rng(rng_seed)
    devices, inverse = np.unique(device_id, return_inverse=True)
    dev_first = np.full(devices.size, np.inf)
    dev_last = np.full(devices.size, -np.inf)
    np.minimum.at(dev_first, inverse, ts)
    np.maximum.at(dev_last, inverse, ts)

    onset = np.full(devices.size, np.inf)
    if spec.kind == "cascade":
        kind = spec.cascade_kind
        if kind not in DEVICE_KINDS:
            raise ConfigError(f"unknown cascade kind {kind!r}")
        lo, hi = _onset_range(spec, float(ts.min()), float(ts.max()))
        groups = np.unique(group)
        chosen = rng.choice(groups, size=min(spec.n_groups, groups.size), replace=False)
        hit = np.unique(inverse[np.isin(group, chosen)])
        onset[hit] = rng.uniform(lo, hi) + rng.uniform(0.0, spec.window_s, hit.size)
    else:
        kind = spec.kind
        hit = rng.choice(devices.size, size=min(spec.n_devices, devices.size), replace=False)
        for i in hit:
            onset[i] = rng.uniform(*_onset_range(spec, dev_first[i], dev_last[i]))

    # Snap each onset to the device's first reading at or after it.
    first_ts = np.full(devices.size, np.inf)
    np.minimum.at(first_ts, inverse, np.where(ts >= onset[inverse], ts, np.inf))
    on = first_ts[inverse]
    window = (ts >= on) & (ts < on + spec.duration_s)
    at_onset = ts == on

    new_value = value.astype(np.float64, copy=True)
    keep = np.ones(ts.shape, dtype=np.bool_)
    if kind == "spike":
        new_value[at_onset] += spec.magnitude
    elif kind == "dip":
        new_value[at_onset] -= spec.magnitude
    elif kind == "shift":
        new_value[window] += spec.magnitude
    elif kind == "drift":
        ramp = np.clip((ts - on) / spec.duration_s, 0.0, 1.0)
        new_value += np.where(ts >= on, spec.magnitude * ramp, 0.0)
    elif kind == "stuck":
        held = np.full(devices.size, np.nan)
        held[inverse[at_onset]] = value[at_onset]
        new_value[window] = held[inverse[window]]
    else:
        keep[window] = False

    affected = np.flatnonzero(np.isfinite(first_ts))
    truth = [Truth(int(devices[i]), kind, float(first_ts[i])) for i in affected]
    return Injected(value=new_value, keep=keep, truth=truth)


def _onset_range(spec: AnomalySpec, first_ts: float, last_ts: float) -> tuple[float, float]:
    span = last_ts - first_ts
    lo = spec.earliest_onset_ts if spec.earliest_onset_ts is not None else first_ts + span / 4
    hi = spec.latest_onset_ts if spec.latest_onset_ts is not None else last_ts - span / 4
    return lo, max(lo, hi)
