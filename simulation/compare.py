"""The simulated day side by side: this scaling policy against Celery's stock rule and an HPA."""

from __future__ import annotations

import math
from typing import Any

from simulation.pools import SCALERS
from simulation.scenarios import SCENARIOS, run_spec, simulated_day

SCALER_LABELS = {
    "policy": "iotsched ScalingPolicy",
    "celery": "Celery stock autoscaler",
    "hpa": "Kubernetes HPA-style",
}
#: The table's columns: (figure, heading, format).
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("scaling_reaction_s", "reaction s", "{:.1f}"),
    ("premium_p99_ms", "premium p99 ms", "{:.0f}"),
    ("standard_p99_ms", "standard p99 ms", "{:.0f}"),
    ("standard_p99_disturbed_ms", "std p99 in spikes ms", "{:.0f}"),
    ("wastage_pct", "wastage %", "{:.1f}"),
    ("policy_wastage_pct", "beyond floor %", "{:.1f}"),
    ("slot_hours", "slot-hours", "{:.0f}"),
    ("lost", "lost", "{:.0f}"),
    ("wall_time_s", "wall s", "{:.1f}"),
)


def side_by_side(seed: int = 0, hours: float = 24.0, **day: Any) -> dict[str, dict[str, Any]]:
    """Figures per scaler for the same simulated day (or its first ``hours``).

    ``day`` passes on to ``simulated_day`` (start hour, spikes) for shorter comparisons.
    """
    scenario = SCENARIOS["simulated_day"]
    rows: dict[str, dict[str, Any]] = {}
    for scaler in SCALERS:
        spec = simulated_day(seed, scaler, hours=hours, **day)
        figs = run_spec(scenario, spec).figures
        figs["slot_hours"] = figs["slot_seconds"] / 3600.0
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
