"""Latencies from a Trace's cumulative arrival and service curves.

Latency of fluid FIFO queues comes from the cumulative arrival and service
curves: the readings that arrived in the middle of a step are done when the
service curve reaches the arrival curve at that point. A reading's latency
is that wait plus the micro-batch flush age and one batch's service time.
Detection and the anomaly workflow's start are read off the same curves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from simulation.trace import ANOMALY, PREMIUM, SCREEN, Trace


def weighted_percentile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    """The q-th percentile (0–100) of values, each counted ``weights`` times."""
    keep = weights > 0
    if not np.any(keep):
        return math.nan
    v, w = values[keep], weights[keep]
    order = np.argsort(v, kind="stable")
    cum = np.cumsum(w[order])
    return float(v[order][np.searchsorted(cum, q / 100.0 * cum[-1])])


def _done_time_s(cum_served: np.ndarray, target: np.ndarray, step_s: float) -> np.ndarray:
    """When the served curve (end-of-step cumulative) reaches ``target``; inf if never."""
    s = np.concatenate(([0.0], cum_served))
    j = np.searchsorted(s, target - 1e-9, side="left")
    done = np.full(target.shape, np.inf)
    ok = j < s.shape[0]
    jj = np.clip(j, 1, s.shape[0] - 1)
    frac = np.where(
        s[jj] > s[jj - 1], (target - s[jj - 1]) / np.maximum(s[jj] - s[jj - 1], 1e-12), 1.0
    )
    done[ok] = ((jj - 1) + np.clip(frac, 0.0, 1.0))[ok] * step_s
    return done


def fifo_wait_s(arrived: np.ndarray, served: np.ndarray, step_s: float) -> np.ndarray:
    """Queueing wait of each step's mid-step arrivals; unserved ones wait until the run's end."""
    cum_a = np.cumsum(arrived)
    mid = cum_a - arrived / 2.0
    t_mid = (np.arange(arrived.shape[0]) + 0.5) * step_s
    done = _done_time_s(np.cumsum(served), mid, step_s)
    end = arrived.shape[0] * step_s
    return np.asarray(np.maximum(np.where(np.isfinite(done), done, end) - t_mid, 0.0))


def flush_age_s(trace: Trace, cls: int) -> np.ndarray:
    """Age of a micro-batch when it is flushed (on size or on age), per step and region.

    Charged in full to every reading: the p99 reading is near the head of its batch.
    """
    sv = trace.spec.service
    rate = trace.arrived[:, :, cls] / trace.spec.step_s
    max_age = sv.premium_max_age_s if cls == PREMIUM else sv.standard_max_age_s
    return np.asarray(np.minimum(max_age, sv.batch_readings / np.maximum(rate, 1e-9)))


def batch_overhead_s(trace: Trace, cls: int) -> np.ndarray:
    """Flush age plus one batch's service, per step and region, for a routine class."""
    sv = trace.spec.service
    rate = trace.arrived[:, :, cls] / trace.spec.step_s
    max_age = sv.premium_max_age_s if cls == PREMIUM else sv.standard_max_age_s
    batch = np.minimum(sv.batch_readings, rate * max_age)
    return flush_age_s(trace, cls) + batch / sv.routine_rps_per_slot


@dataclass
class Latency:
    """Per-step, per-region latency (s) and the readings it applies to."""

    latency_s: np.ndarray
    weight: np.ndarray

    def percentile_ms(self, q: float, regions: np.ndarray | None = None) -> float:
        lat, w = self.latency_s, self.weight
        if regions is not None:
            lat, w = lat[:, regions], w[:, regions]
        return weighted_percentile(lat.ravel(), w.ravel(), q) * 1000.0


def tier_latency(trace: Trace, cls: int) -> Latency:
    step = trace.spec.step_s
    n_steps, n_regions = trace.arrived.shape[0], trace.arrived.shape[1]
    lat = np.zeros((n_steps, n_regions))
    for r in range(n_regions):
        lat[:, r] = fifo_wait_s(trace.arrived[:, r, cls], trace.served[:, r, cls], step)
    return Latency(lat + batch_overhead_s(trace, cls), trace.arrived[:, :, cls])


def detection_s(trace: Trace, per_event_devices: int = 500) -> np.ndarray:
    """Occurrence → screened, for a sample of the devices of every injected anomaly.

    A device's first abnormal reading comes a uniform fraction of its interval
    after the occurrence (``readings_to_detect - 1`` more for slow kinds); it is
    detected when the batch holding it has been screened.
    """
    spec, step = trace.spec, trace.spec.step_s
    fleet = spec.fleet
    rng = np.random.default_rng([spec.seed, 0xDE7EC7])
    out = []
    for ev in spec.anomalies:
        r = ev.region
        cells = np.flatnonzero((fleet.home_region == r) & (fleet.tier == ev.tier))
        pick = rng.choice(cells, size=min(per_event_devices, ev.devices, cells.size), replace=False)
        # Devices the detector misses never reach an alert: they count against recall only.
        pick = pick[rng.random(pick.size) < ev.detected_share]
        interval = fleet.reading_interval_s[pick].astype(np.float64)
        needed = (
            rng.choice(np.asarray(ev.readings_needed), size=pick.size)
            if ev.readings_needed
            else np.full(pick.size, ev.readings_to_detect)
        )
        emitted = ev.t_s + rng.random(pick.size) * interval + (needed - 1) * interval
        screen_rps = trace.arrived[:, r, SCREEN] / step
        age = np.minimum(
            spec.service.screen_max_age_s,
            spec.service.batch_readings / np.maximum(screen_rps, 1e-9),
        )
        idx = np.minimum((emitted / step).astype(np.int64), trace.arrived.shape[0] - 1)
        flushed = emitted + age[idx]
        cum_a = np.concatenate(([0.0], np.cumsum(trace.arrived[:, r, SCREEN])))
        pos = flushed / step
        k = np.minimum(pos.astype(np.int64), cum_a.shape[0] - 2)
        target = cum_a[k] + (pos - k) * (cum_a[k + 1] - cum_a[k])
        done = _done_time_s(np.cumsum(trace.served[:, r, SCREEN]), target, step)
        screen_batch_s = spec.service.batch_readings / spec.service.screen_rps_per_slot
        out.append(np.maximum(done, flushed) + screen_batch_s - ev.t_s)
    return np.concatenate(out) if out else np.zeros(0)


def anomaly_start_s(trace: Trace) -> np.ndarray:
    """Anomaly workflow enqueued → started: a slot freed (preemption) and the queue ahead of it."""
    step = trace.spec.step_s
    out = []
    for _idx, t_det, r, release_s in trace.anomaly_enqueued:
        i = round(t_det / step)
        before = trace.arrived[:i, r, ANOMALY].sum()
        own = min(1.0, float(trace.arrived[i, r, ANOMALY]))  # a workflow with no data to move
        done = _done_time_s(np.cumsum(trace.served[:, r, ANOMALY]), np.array([before + own]), step)
        wait = max(0.0, float(done[0]) - (i + 1) * step) if np.isfinite(done[0]) else math.inf
        out.append(release_s + wait)
    return np.array(out)
