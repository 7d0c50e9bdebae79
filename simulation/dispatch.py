"""One step of service on the virtual clock: the ledger's class grants, then queue order.

Each step the capacity ledger (scheduler.capacity) grants every class the slots its
queue needs, within the region's budget less what maintenance holds; ready slots serve
the grants first, in the ledger's claim order, then whatever is left in queue order.
Anomaly work spends at most what the region's anomaly work budget allows now
(``SimSpec.anomaly_work``, scheduler.work_budget), tracked as a theoretical arrival time.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from scheduler.capacity import CapacityLedger
from scheduler.model import WorkClass
from simulation.pools import Pool
from simulation.spec import SimSpec
from simulation.trace import ANOMALY, CLASSES

#: Claim order of the capacity ledger, as indices into CLASSES.
_CLASS_INDEX = {c: i for i, c in enumerate(CLASSES)}


class Dispatcher:
    """Serves each region's queues from its ready slots, step by step."""

    def __init__(
        self, spec: SimSpec, ledgers: Sequence[CapacityLedger], rate_per_slot: np.ndarray
    ) -> None:
        self.spec = spec
        self.ledgers = ledgers
        #: Readings per slot-second, per class.
        self.rate_per_slot = rate_per_slot
        #: Theoretical arrival time of each region's budget of work above premium.
        self.work_tat = np.full(len(ledgers), spec.start_ts)

    def allocate(self, queue: np.ndarray, reserved: np.ndarray, grant_slots: np.ndarray) -> None:
        """The ledger's class grants for what is queued now (it is cheap: every step)."""
        need = np.ceil(queue / (self.rate_per_slot * self.spec.step_s) - 1e-9).astype(np.int64)
        for r, ledger in enumerate(self.ledgers):
            demand = {c: int(need[r, k]) for k, c in enumerate(CLASSES)}
            grants = ledger.allocate(demand, int(reserved[r]))
            grant_slots[r] = [grants[c] for c in CLASSES]

    def serve(
        self,
        queue: np.ndarray,
        pools: Sequence[Pool],
        grant_slots: np.ndarray,
        down: np.ndarray,
        t: float,
    ) -> np.ndarray:
        """Readings served this step: ledger grants first, then the rest in queue order."""
        dt = self.spec.step_s
        ready = np.array([p.ready for p in pools], dtype=np.float64)
        left = np.where(down, 0.0, ready * dt)  # slot-seconds this step
        need = queue / self.rate_per_slot
        budget = self.spec.anomaly_work
        if budget is not None:
            # Anomaly work spends at most what the region's work budget allows now.
            now_ts = self.spec.start_ts + t
            debt_s = np.maximum(self.work_tat - now_ts, 0.0)
            allowed = np.maximum(budget.burst_s - debt_s * budget.share, 0.0)
            need = need.copy()
            need[:, ANOMALY] = np.minimum(need[:, ANOMALY], allowed + budget.share * dt)
        take = np.zeros_like(queue)
        for c in (WorkClass.PREMIUM, WorkClass.ANOMALY, WorkClass.SCREEN, WorkClass.STANDARD):
            k = _CLASS_INDEX[c]
            got = np.minimum(np.minimum(need[:, k], grant_slots[:, k] * dt), left)
            take[:, k] += got
            left -= got
        for k in range(len(CLASSES)):
            got = np.minimum(need[:, k] - take[:, k], left)
            take[:, k] += got
            left -= got
        served = np.asarray(np.minimum(np.floor(take * self.rate_per_slot + 1e-6), queue))
        if budget is not None:
            spent = served[:, ANOMALY] / self.rate_per_slot[ANOMALY]
            self.work_tat = np.maximum(self.work_tat, now_ts) + spent / budget.share
        return served
