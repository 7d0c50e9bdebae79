"""The simulated day side by side: this scaling policy against the baselines its users would run.

Celery's stock autoscaler, a Kubernetes HPA on CPU at the policy's own target
utilization, and KEDA's Redis list-length trigger at a listLength whose
queueing delay matches the policy's; each also with a predictive floor from
yesterday's curve, so the forecast's share of the difference shows apart
from the reactive rule's. Every row carries its settings.
"""

from __future__ import annotations

import math
from typing import Any

from scheduler.hpa_baselines import list_length_for_delay
from simulation.criteria import run_spec
from simulation.pools import SCALERS
from simulation.scenarios import SCENARIOS, simulated_day
from simulation.trace import Trace

SCALER_LABELS = {
    "policy": "iotsched ScalingPolicy",
    "celery": "Celery stock autoscaler",
    "celery+forecast": "Celery stock + forecast floor",
    "hpa": "Kubernetes HPA on CPU",
    "hpa+forecast": "Kubernetes HPA + forecast floor",
    "keda": "KEDA Redis listLength",
    "keda+forecast": "KEDA listLength + cron floor",
}
#: The table's columns: (figure, heading, format).
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("scaling_reaction_s", "reaction s", "{:.1f}"),
    ("premium_p99_ms", "premium p99 ms", "{:.0f}"),
    ("standard_p99_ms", "standard p99 ms", "{:.0f}"),
    ("standard_p99_disturbed_ms", "std p99 in spikes ms", "{:.0f}"),
    ("queue_wait_ms", "mean wait ms", "{:.0f}"),
    ("wastage_pct", "wastage %", "{:.1f}"),
    ("policy_wastage_pct", "beyond floor %", "{:.1f}"),
    ("slot_hours", "slot-hours", "{:.0f}"),
    ("lost", "lost", "{:.0f}"),
    ("wall_time_s", "wall s", "{:.1f}"),
)


def queue_wait_s(trace: Trace) -> float:
    """Mean time a reading waited in a region queue, by Little's law (queued ÷ arrival rate)."""
    arrived = float(trace.arrived.sum())
    if arrived <= 0:
        return 0.0
    return float(trace.queue.sum()) * trace.spec.step_s / arrived


def side_by_side(
    seed: int = 0, hours: float = 24.0, scalers: tuple[str, ...] = SCALERS, **day: Any
) -> dict[str, dict[str, Any]]:
    """Figures per scaler for the same simulated day (or its first ``hours``).

    The policy runs first: KEDA's listLength is chosen so that its steady
    queue waits as long as the policy's queue did on average. ``day`` passes
    on to ``simulated_day`` (start hour, spikes) for shorter comparisons.
    """
    scenario = SCENARIOS["simulated_day"]
    order = ("policy", *(s for s in scalers if s != "policy"))
    rows: dict[str, dict[str, Any]] = {}
    list_length = 1
    for scaler in order:
        spec = simulated_day(seed, scaler, hours=hours, keda_list_length=list_length, **day)
        outcome = run_spec(scenario, spec)
        figs = outcome.figures
        figs["slot_hours"] = figs["slot_seconds"] / 3600.0
        figs["queue_wait_ms"] = queue_wait_s(outcome.trace) * 1000.0
        figs["settings"] = outcome.trace.scaler_settings[0]
        if scaler == "policy":
            sv = spec.service
            list_length = list_length_for_delay(
                figs["queue_wait_ms"] / 1000.0, sv.batch_readings, sv.routine_rps_per_slot
            )
        if scaler in scalers:
            rows[scaler] = figs
    return rows


def format_table(rows: dict[str, dict[str, Any]]) -> str:
    head = ["scaler", *(h for _, h, _ in COLUMNS)]
    body = []
    for scaler, figs in rows.items():
        cells = [SCALER_LABELS.get(scaler, scaler)]
        for key, _, fmt in COLUMNS:
            value = figs.get(key, math.nan)
            cells.append("n/a" if value is None or value != value else fmt.format(value))
        body.append(cells)
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in
                       enumerate(zip(r, widths, strict=True))) for r in [head, *body]]  # fmt: skip
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_settings(rows: dict[str, dict[str, Any]]) -> str:
    """One line per row: how its scaler was configured (eu-west's pool; others differ in bounds)."""
    width = max(len(SCALER_LABELS.get(s, s)) for s in rows)
    return "\n".join(
        f"{SCALER_LABELS.get(s, s).ljust(width)}  {f.get('settings', '')}" for s, f in rows.items()
    )
