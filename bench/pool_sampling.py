"""A worker pool's heartbeats sampled over a run, and the slot-seconds figures from them.

Provisioned slot-seconds integrate the pool size from its heartbeats; busy
slot-seconds are the task-seconds its processes report (workers/busy_time.py).
"""

from __future__ import annotations

import math
import threading
from itertools import pairwise
from typing import Any

from stores.pool_heartbeats import PoolBeat, PoolHeartbeats


class PoolSampler(threading.Thread):
    """Polls the worker's heartbeats; keeps (seen_ts, beat) for every new beat."""

    def __init__(self, beats: PoolHeartbeats, node: str, interval_s: float) -> None:
        super().__init__(daemon=True)
        self.beats, self.node, self.interval_s = beats, node, interval_s
        self.samples: list[PoolBeat] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.wait(self.interval_s / 2):
            beat = self.beats.read().get(self.node)
            if beat is not None and (not self.samples or beat.at_ts > self.samples[-1].at_ts):
                self.samples.append(beat)

    def since(self, ts: float) -> list[PoolBeat]:
        return [b for b in list(self.samples) if b.at_ts >= ts]


def span_s(beats: list[PoolBeat]) -> float:
    return beats[-1].at_ts - beats[0].at_ts if len(beats) > 1 else 0.0


def slot_seconds(beats: list[PoolBeat]) -> tuple[float, float]:
    """(provisioned, busy) slot-seconds between the first and last beat.

    Provisioned integrates the pool size over time; busy is the task-seconds
    the pool's processes report running (exact, not sampled).
    """
    if len(beats) < 2:
        return 0.0, 0.0
    provisioned = sum(a.slots * (b.at_ts - a.at_ts) for a, b in pairwise(beats))
    return provisioned, beats[-1].busy_s - beats[0].busy_s


def steady_figures(steady: list[PoolBeat], rate: float, sampled_s: float) -> dict[str, Any]:
    """Provisioned vs busy slot-seconds over the beats sampled under steady load."""
    provisioned_slot_s, busy_slot_s = slot_seconds(steady)
    steady_service_rps = (steady[-1].finished - steady[0].finished) / max(
        1e-9, steady[-1].busy_s - steady[0].busy_s
    )
    # What the load needed, in slots: busy slot-seconds over the span. Integer
    # slots cannot be fuller than mean_busy / ceil(mean_busy): the floor.
    mean_busy = busy_slot_s / max(1e-9, span_s(steady))
    finished_rps = (steady[-1].finished - steady[0].finished) / max(1e-9, span_s(steady))
    return {
        "arrival_tasks_s": round(rate, 1),
        "seconds_sampled": round(sampled_s, 1),
        "finished_tasks_s": round(finished_rps, 1),
        "service_tasks_per_slot_s": round(steady_service_rps, 1),
        "mean_busy_slots": round(mean_busy, 2),
        "wastage_floor": round(1 - mean_busy / max(1, math.ceil(mean_busy)), 3),
        "mean_slots": round(provisioned_slot_s / max(1e-9, span_s(steady)), 2),
        "utilization": round(busy_slot_s / max(1e-9, provisioned_slot_s), 3),
        "wastage": round(1 - busy_slot_s / max(1e-9, provisioned_slot_s), 3),
        # What the policy added on top of the floor; negative: part of the time
        # the pool ran below ceil(mean_busy_slots) (it queued instead).
        "policy_excess": round(
            mean_busy / max(1, math.ceil(mean_busy)) - busy_slot_s / max(1e-9, provisioned_slot_s),
            3,
        ),
    }
