"""Figures from a Trace: latency per tier, detection, scaling reaction, wastage, placement, loss.

Latencies (tiers, detection, anomaly start) come from the arrival and service
curves (``simulation.latency``); this module adds the capacity figures (wastage,
scaling reaction), conservation, and gathers them all in ``figures``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from simulation.latency import Latency, anomaly_start_s, detection_s, tier_latency
from simulation.trace import ANOMALY, PREMIUM, STANDARD, Trace


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
    out["storm_incidents"] = len(trace.silence_incidents)
    out["accelerated_readings"] = float(trace.arrived[:, :, ANOMALY].sum())
    return out
