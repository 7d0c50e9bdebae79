"""Load shapes for the benchmark, and what happened inside their disturbed window.

The producer is paced by the simulator's own load patterns (simulation.loads),
so a spike on real workers is the same spike the scenarios simulate. A
watcher snapshots the latency and detection histograms when the window opens
and again once the screening queues have drained after it closes; the
difference is what the spike's readings saw.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from scheduler.latency import percentile_ms
from scheduler.model import WorkClass, queue_name
from simulation.loads import pattern_by_name
from stores.detector_store import detection_histogram
from stores.queue_depth import queue_depths

RESOLUTION_S = 0.01


@dataclass(frozen=True)
class PatternPace:
    """Cumulative readings to have offered by ``t`` seconds, from a named load pattern."""

    name: str
    base_rps: float
    horizon_s: float
    cumulative: np.ndarray
    #: [start, end) where the rate is above 1.5 × its median: the disturbance.
    window_s: tuple[float, float] | None
    peak_x: float

    @classmethod
    def named(cls, name: str, base_rps: float, horizon_s: float, seed: int = 0) -> PatternPace:
        pattern = pattern_by_name(name, seed=seed, base_rps=base_rps, horizon_s=horizon_s)
        t = np.arange(0.0, horizon_s, RESOLUTION_S)
        rate = pattern.total_rps(t)
        cumulative = np.concatenate(([0.0], np.cumsum(rate) * RESOLUTION_S))
        median = float(np.median(rate))
        hot = np.flatnonzero(rate > 1.5 * median)
        window = (float(t[hot[0]]), float(t[hot[-1]] + RESOLUTION_S)) if hot.size else None
        return cls(name, base_rps, horizon_s, cumulative, window, float(rate.max() / median))

    @property
    def readings(self) -> int:
        return int(self.cumulative[-1])

    def __call__(self, elapsed_s: float) -> float:
        i = min(int(elapsed_s / RESOLUTION_S), self.cumulative.size - 1)
        return float(self.cumulative[i])

    def offer_instants(self, first: int, n: int) -> np.ndarray:
        """Seconds from the start at which readings ``first .. first+n-1`` are due."""
        k = first + np.arange(n, dtype=np.float64) + 1.0
        return np.searchsorted(self.cumulative, k, side="left") * RESOLUTION_S


class WindowWatch:
    """Snapshots histograms at the window's start and after the screening drain."""

    def __init__(self, run_: Any, pace: PatternPace, started_ts: float) -> None:
        self.run = run_
        self.pace = pace
        self.started_ts = started_ts
        self._before: dict[str, dict[int, int]] = {}
        self._after: dict[str, dict[int, int]] = {}
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def start(self) -> WindowWatch:
        if self.pace.window_s is not None:
            self._thread.start()
        return self

    def _histograms(self) -> dict[str, dict[int, int]]:
        store = self.run.store
        out = {tier: store.latency_histogram("ingest", tier) for tier in self.run.settings.tiers}
        out["detection"] = detection_histogram(store.client, self.run.keys)
        return out

    def _screen_backlog(self) -> int:
        queues = [queue_name(r, WorkClass.SCREEN.value) for r in self.run.settings.regions]
        return sum(queue_depths(self.run.store.client, self.run.keys, queues).values())

    def _watch(self) -> None:
        assert self.pace.window_s is not None
        start, end = self.pace.window_s
        time.sleep(max(0.0, self.started_ts + start - time.time()))
        self._before = self._histograms()
        time.sleep(max(0.0, self.started_ts + end - time.time()))
        while self._screen_backlog() > 0:
            time.sleep(0.05)
        self._after = self._histograms()

    def report(self, timeout_s: float = 60.0) -> dict[str, Any] | None:
        if self.pace.window_s is None:
            return None
        self._thread.join(timeout_s)
        delta = {k: _minus(self._after.get(k, {}), self._before.get(k, {})) for k in self._after}
        figures = {
            k: {
                "p50": _ms(percentile_ms(h, 50)),
                "p99": _ms(percentile_ms(h, 99)),
                "count": sum(h.values()),
            }
            for k, h in delta.items()
        }
        return {
            "window_s": list(self.pace.window_s),
            "offered_x": round(self.pace.peak_x, 2),
            "latency_ms": {k: v for k, v in figures.items() if k != "detection"},
            "detection_ms": figures.get("detection"),
        }


def _minus(after: Mapping[int, int], before: Mapping[int, int]) -> dict[int, int]:
    return {b: c - before.get(b, 0) for b, c in after.items() if c > before.get(b, 0)}


def _ms(x: float | None) -> float | None:
    return None if x is None else round(x, 2)
