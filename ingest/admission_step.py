"""Which of a call's readings ingest takes now, and which it hands back.

Two reasons to hand readings back: no room (the outbox holds its bound while the
broker is away, or the pause gate says Redis is close to ``maxmemory``), for every
tier; and the backlog gate (the region's non-premium backlog is past what it drains
within its budget), for every tier but premium, which is never pushed back.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from ingest.broker_link import BrokerLink
from ingest.ingest_types import BacklogGate, PauseGate, ScreenCost
from scheduler.held_screening import HeldScreenBudget


class Admission:
    def __init__(
        self,
        link: BrokerLink,
        backlog_gate: BacklogGate | None,
        screen_cost: ScreenCost | None,
        pause_gate: PauseGate | None,
        outbox_max_readings: int,
    ) -> None:
        self.link = link
        self.backlog_gate = backlog_gate
        self.screen_cost = screen_cost
        self.pause_gate = pause_gate
        self.outbox_max_readings = outbox_max_readings

    def room(self, buffered_readings: int) -> int:
        """How many new readings ingest may take now (``buffered_readings``: what the
        batcher holds, bound for the outbox too while the broker is away)."""
        if self.pause_gate is not None and self.link.guarded(self.pause_gate) is True:
            return 0
        if not self.link.degraded:
            return 1 << 62
        held = self.link.outbox.held_readings + buffered_readings
        return max(0, self.outbox_max_readings - held)

    def closed(self, n_regions: int, budget: HeldScreenBudget) -> npt.NDArray[np.bool_] | None:
        """Per region code, True where non-premium readings are pushed back now (all open
        when the gate cannot be read); None without a backlog gate. The held-screening
        ``budget`` follows the screening cost measured alongside."""
        if self.backlog_gate is None:
            return None
        closed = self.link.guarded(self.backlog_gate)
        ratio = None if self.screen_cost is None else self.screen_cost()
        if ratio is not None:
            budget.follow_cost(ratio)
        return np.zeros(n_regions, dtype=bool) if closed is None else np.asarray(closed, bool)


def hand_back(
    pushed_back: npt.NDArray[np.intp],
    pushed_region: npt.NDArray[np.intp],
    more: npt.NDArray[np.intp],
    more_region: npt.NDArray[np.integer],
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Readings handed back (indexes into the call's input, with their regions), joined
    by ``more``, in input order."""
    index = np.concatenate((pushed_back, more))
    region = np.concatenate((pushed_region, more_region.astype(np.intp)))
    order = np.argsort(index, kind="stable")
    return index[order], region[order]
