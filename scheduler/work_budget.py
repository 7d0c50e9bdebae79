"""The budget of work ranked above premium: a share of a region's slot time, and a burst.

Anomaly workflows run ahead of premium in every data worker's queue order, so their
cost comes straight out of premium's latency. Accelerated processing (applying an
incident's pending routine chunks early) is the part that grows with a storm, so it
spends from this budget: a generic cell rate algorithm (GCRA) over slot-seconds.
Work may start while the region's debt, ``tat_ts - now_ts``, is at most
``burst_s / share``; each run pushes the debt out by its measured cost / ``share``.
Over any interval the budgeted work takes at most ``share`` of one slot's time plus
one burst; past it, accelerated processing is skipped (the routine workers process
the same readings in order, so nothing is lost, only not hurried).
"""

from __future__ import annotations

from dataclasses import dataclass

#: Share of one worker slot's time budgeted work may use in a region. Acceleration grows
#: with a storm, which is also when premium's own load peaks (a fleet-wide spike): a
#: tenth of the slot. Measured at 10x capacity (beyond_capacity, three one-slot
#: workers), a quarter of the slot took premium p99 inside the spike to 650-720 ms,
#: a tenth to 536 ms; the readings not hurried are processed in order regardless.
ANOMALY_WORK_SHARE = 0.1
#: Slot-seconds budgeted work may spend at once, and the longest one run may take
#: (tasks/accelerate.py stops there): premium waits at most this long behind it (plus
#: one routine chunk), well inside premium's 500 ms bound.
ANOMALY_WORK_BURST_S = 0.2
#: Slot-seconds one budgeted run costs beyond what its own clock sees: the worker taking
#: the message, decoding and acking it, and the task's prerun/postrun. About 10 ms on a
#: loaded machine (a pass that only found the budget spent held a slot that long, see
#: ``tasks.anomaly.book_acceleration``); at 2x capacity, charging only the in-task time
#: let accelerated processing take 16-21% of a region worker (13-15% in tasks and
#: 3-6% between them) against its 10% share.
ANOMALY_RUN_OVERHEAD_S = 0.01


@dataclass(frozen=True)
class WorkBudget:
    share: float = ANOMALY_WORK_SHARE
    burst_s: float = ANOMALY_WORK_BURST_S
    run_overhead_s: float = ANOMALY_RUN_OVERHEAD_S

    def __post_init__(self) -> None:
        if not 0 < self.share <= 1 or self.burst_s < 0 or self.run_overhead_s < 0:
            raise ValueError(
                f"need 0 < share <= 1, burst_s >= 0 and run_overhead_s >= 0, got {self}"
            )

    def run_cost_s(self, measured_s: float) -> float:
        """What one run costs the slot: its measured time plus its delivery (a run that
        only found the budget spent measures 0 s and still costs its delivery)."""
        return max(0.0, measured_s) + self.run_overhead_s

    def admits(self, tat_ts: float, now_ts: float) -> bool:
        """May budgeted work start now, given the stored theoretical arrival time?"""
        return tat_ts - now_ts <= self.burst_s / self.share

    def charge(self, tat_ts: float, now_ts: float, cost_s: float) -> float:
        """The new theoretical arrival time after ``cost_s`` slot-seconds of work."""
        return max(tat_ts, now_ts) + max(0.0, cost_s) / self.share
