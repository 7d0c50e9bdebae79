"""One PNG per run: arrival rate, queue depth, capacity per class, latency per tier, over time."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and in CI

import matplotlib.pyplot as plt
import numpy as np

from scheduler.defaults import PREMIUM_LATENCY_BOUND_MS
from simulation.latency import tier_latency
from simulation.trace import CLASSES, PREMIUM, STANDARD, Trace

#: At most this many points per curve: a day at 1 s steps is binned to ~1.5 min.
MAX_POINTS = 1_000
CLASS_COLOURS = {"anomaly": "tab:red", "screen": "tab:orange", "premium": "tab:blue",
                 "standard": "tab:green"}  # fmt: skip


def _bin(values: np.ndarray, size: int, how: str = "mean") -> np.ndarray:
    n = values.shape[0] // size * size
    shaped = values[:n].reshape(n // size, size, *values.shape[1:])
    return np.asarray(shaped.max(axis=1) if how == "max" else shaped.mean(axis=1))


def plot_trace(trace: Trace, path: str | Path, title: str) -> Path:
    """Write the four-panel PNG to ``path`` and return it."""
    step = trace.spec.step_s
    size = max(1, trace.arrived.shape[0] // MAX_POINTS)
    t = _bin(trace.t_s, size)
    hours = trace.spec.duration_s >= 4 * 3600
    x = t / 3600.0 if hours else t
    fig, axes = plt.subplots(4, 1, figsize=(12, 11), sharex=True)
    fig.suptitle(title)

    ax = axes[0]
    for r, name in enumerate(trace.regions):
        ax.plot(x, _bin(trace.offered[:, r], size) / step / 1e3, label=name)
    ax.set_ylabel("offered by home region\n(k readings/s)")
    ax.legend(loc="upper left", fontsize=8)

    ax = axes[1]
    for k, c in enumerate(CLASSES):
        q = _bin(trace.queue[:, :, k].sum(axis=1), size, "max")
        ax.plot(x, np.maximum(q, 1.0), label=c.value, color=CLASS_COLOURS[c.value])
    ax.set_yscale("log")
    ax.set_ylabel("queued readings\n(all regions, max)")
    ax.legend(loc="upper left", fontsize=8, ncol=4)

    ax = axes[2]
    sv = trace.spec.service
    per_slot = np.array([sv.anomaly_rps_per_slot, sv.screen_rps_per_slot,
                         sv.routine_rps_per_slot, sv.routine_rps_per_slot])  # fmt: skip
    used = _bin((trace.served / per_slot).sum(axis=1) / step, size)
    ax.stackplot(x, used.T, labels=[c.value for c in CLASSES],
                 colors=[CLASS_COLOURS[c.value] for c in CLASSES], alpha=0.8)  # fmt: skip
    maint = _bin(trace.maintenance_slots.sum(axis=1), size)
    if maint.any():
        ax.fill_between(x, used.sum(axis=1), used.sum(axis=1) + maint, color="tab:purple",
                        alpha=0.5, label="maintenance")  # fmt: skip
    ax.plot(x, _bin(trace.provisioned.sum(axis=1), size), "k-", lw=1, label="provisioned")
    ax.plot(x, _bin(trace.data_cap.sum(axis=1), size), "k:", lw=1, label="budget for data")
    ax.set_ylabel("slots\n(all regions)")
    ax.legend(loc="upper left", fontsize=8, ncol=4)

    ax = axes[3]
    for cls, name in ((PREMIUM, "premium"), (STANDARD, "standard")):
        lat = tier_latency(trace, cls).latency_s.max(axis=1) * 1000.0
        ax.plot(x, np.maximum(_bin(lat, size, "max"), 1.0), label=f"{name} (worst region)",
                color=CLASS_COLOURS[name])  # fmt: skip
    ax.axhline(PREMIUM_LATENCY_BOUND_MS, color="tab:blue", ls="--", lw=1, label="premium bound")
    ax.set_yscale("log")
    ax.set_ylabel("latency (ms)")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_xlabel("hours" if hours else "seconds")

    for a in axes:
        a.grid(alpha=0.3)
        for p in trace.spec.partitions:
            scale = 3600.0 if hours else 1.0
            a.axvspan(p.start_s / scale, p.end_s / scale, color="grey", alpha=0.15)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out
