"""Figures from a Trace: latency per tier, detection, scaling reaction, wastage, placement, loss.

Latency of fluid FIFO queues comes from the cumulative arrival and service
curves: the readings that arrived in the middle of a step are done when the
service curve reaches the arrival curve at that point. A reading's latency
is that wait plus the micro-batch flush age and one batch's service time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from simulation.trace import ANOMALY, PREMIUM, SCREEN, STANDARD, Trace


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


def normal_mask(trace: Trace) -> np.ndarray:
    """Steps of normal operation: outside disturbances and the scale-down window after them."""
    spec = trace.spec
    t = trace.t_s
    normal = np.ones(t.shape, dtype=bool)
    settle_s = spec.scaling.scale_down_window_s + 30.0
    for start, end in spec.disturbances:
        normal &= ~((t >= start) & (t < end + settle_s))
    for p in spec.partitions:
        normal &= ~((t >= p.start_s) & (t < p.end_s + settle_s))
    return normal


def wastage_pct(trace: Trace, mask: np.ndarray) -> float:
    prov = trace.provisioned[mask].sum()
    idle = np.maximum(trace.provisioned[mask] - trace.busy_slots[mask], 0.0).sum()
    return float(100.0 * idle / prov) if prov else math.nan


def granularity_floor_pct(trace: Trace, mask: np.ndarray) -> float:
    """Idle share that whole slots force even if each second had exactly ceil(need) slots."""
    need = offered_slots(trace)[mask]
    floor = np.ceil(need - 1e-9)
    return float(100.0 * (floor - need).sum() / max(floor.sum(), 1e-9))


def policy_wastage_pct(trace: Trace, mask: np.ndarray) -> float:
    """Slot-seconds provisioned beyond ceil(need), as a share of those provisioned.

    This is the part of wastage a scaler controls; the rest is the granularity floor.
    """
    need = offered_slots(trace)[mask]
    prov = trace.provisioned[mask]
    excess = np.maximum(prov - np.ceil(need - 1e-9), 0.0)
    return float(100.0 * excess.sum() / max(prov.sum(), 1e-9))


def offered_slots(trace: Trace) -> np.ndarray:
    """Routine-equivalent slots the arriving work needs, per step and region."""
    sv = trace.spec.service
    per_slot = np.array(
        [sv.anomaly_rps_per_slot, sv.screen_rps_per_slot, sv.routine_rps_per_slot,
         sv.routine_rps_per_slot]
    )  # fmt: skip
    return np.asarray((trace.arrived / per_slot).sum(axis=2) / trace.spec.step_s)


def scaling_reaction_s(trace: Trace, level_window_s: float = 60.0) -> float:
    """Load step → ready slots cover the new load level (or the budget, if it is beyond it)."""
    step = trace.spec.step_s
    need = offered_slots(trace)
    worst = 0.0
    for t0, regions in trace.spec.load_steps:
        i0 = round(t0 / step)
        i1 = min(i0 + int(level_window_s / step), need.shape[0])
        if i0 >= i1:
            continue
        for r in regions:
            level = min(float(need[i0:i1, r].mean()), float(trace.data_cap[i0:i1, r].min()))
            hit = np.flatnonzero(trace.ready[i0:, r] >= level - 1e-9)
            worst = max(worst, hit[0] * step if hit.size else math.inf)
    return worst


def conservation(trace: Trace) -> dict[str, float]:
    """Accepted readings = processed + queued + held at ingest; ``lost`` is what is left over."""
    a, s = trace.arrived, trace.served
    moved = a[:, :, ANOMALY].sum()
    processed = s[:, :, PREMIUM].sum() + s[:, :, STANDARD].sum() - moved + s[:, :, ANOMALY].sum()
    q = trace.final_queue
    queued = q[:, PREMIUM].sum() + q[:, STANDARD].sum() + q[:, ANOMALY].sum()
    lost = trace.accepted_total - processed - queued - trace.final_buffered
    return {
        "accepted": trace.accepted_total,
        "processed": float(processed),
        "queued": float(queued),
        "held_at_ingest": trace.final_buffered,
        "dead_lettered": trace.dead_lettered,
        "lost": float(lost),
    }


def queued_drain_s(trace: Trace) -> float:
    """Seconds the run's final queue takes at its region's final ready slots; worst region.

    The policy lets a queue of under a slot's worth stand while it decides
    whether to buy that slot, so "everything delivered" is this being small
    (it is cleared each cycle), not the queue being empty at the last instant.
    """
    sv = trace.spec.service
    per_slot = np.array(
        [sv.anomaly_rps_per_slot, sv.screen_rps_per_slot, sv.routine_rps_per_slot,
         sv.routine_rps_per_slot]
    )  # fmt: skip
    need_slot_s = (trace.final_queue / per_slot).sum(axis=1)
    ready = trace.ready[-1]
    drain = np.where(need_slot_s > 0, need_slot_s / np.maximum(ready, 1e-12), 0.0)
    return float(np.where((need_slot_s > 0) & (ready <= 0), math.inf, drain).max())


def figures(trace: Trace) -> dict[str, Any]:
    """The scenario's figures, named as the command's JSON names them."""
    spec = trace.spec
    mask = normal_mask(trace)
    never_down = np.flatnonzero(~trace.down.any(axis=0))
    prem, std = tier_latency(trace, PREMIUM), tier_latency(trace, STANDARD)
    out: dict[str, Any] = {
        "premium_p50_ms": prem.percentile_ms(50, never_down),
        "premium_p99_ms": prem.percentile_ms(99, never_down),
        "standard_p50_ms": std.percentile_ms(50, never_down),
        "standard_p99_ms": std.percentile_ms(99, never_down),
        "slot_seconds": float(trace.provisioned.sum() * spec.step_s),
        "cross_region_gb": float(trace.moved_bytes.sum() / 1e9),
        "cross_region_cost": float(trace.moved_cost.sum()),
        "round_robin_cross_region_gb": float(trace.rr_moved_bytes.sum() / 1e9),
        "round_robin_cross_region_cost": float(trace.rr_moved_cost.sum()),
        "residency_violations": trace.residency_violations,
        "held_at_ingest_max": float(trace.buffered.max()),
        "backpressured_max": float(trace.backpressured.max()),
    }
    if mask.any():
        out["wastage_pct"] = wastage_pct(trace, mask)
        out["granularity_floor_pct"] = granularity_floor_pct(trace, mask)
        out["policy_wastage_pct"] = policy_wastage_pct(trace, mask)
        placed = max(float(trace.placed[mask].sum()), 1.0)
        out["home_region_pct"] = float(100.0 * trace.placed_home[mask].sum() / placed)
    if spec.disturbances:
        hit = ~normal_mask(trace)
        out["premium_p99_disturbed_ms"] = Latency(
            prem.latency_s[hit], prem.weight[hit]
        ).percentile_ms(99)
        out["standard_p99_disturbed_ms"] = Latency(
            std.latency_s[hit], std.weight[hit]
        ).percentile_ms(99)
    if spec.load_steps:
        out["scaling_reaction_s"] = scaling_reaction_s(trace)
    if spec.anomalies:
        det = detection_s(trace)
        out["detection_p50_s"] = float(np.percentile(det, 50)) if det.size else math.nan
        out["detection_p99_s"] = float(np.percentile(det, 99)) if det.size else math.nan
        affected = sum(ev.devices for ev in spec.anomalies)
        caught = sum(ev.devices * ev.detected_share for ev in spec.anomalies)
        out["detection_recall"] = caught / affected if affected else math.nan
        start = anomaly_start_s(trace)
        out["anomaly_start_p99_ms"] = (
            float(np.percentile(start, 99) * 1000.0) if start.size else math.nan
        )
    if trace.maintenance_runs:
        out["maintenance_start_delay_s"] = max(o["start_delay_s"] for o in trace.maintenance_runs)
        out["maintenance_runs"] = trace.maintenance_runs
    out.update(conservation(trace))
    out["queued_drain_s"] = queued_drain_s(trace)
    out["storm_incidents"] = len(trace.storms_folded)
    out["accelerated_readings"] = float(trace.arrived[:, :, ANOMALY].sum())
    return out
