"""Injected anomalies on the virtual clock: detected once screened, then folded or accelerated.

An event's first abnormal readings reach the screen queue when it starts; it is
detected when screening has served past them. A silence's returns are then screened
and folded by the runtime's rules into the incidents its correlator raises
(``simulation.return_flood``) and cause no work; any other event's workflow takes the
affected devices' pending routine data into the anomaly queue, and waits for a slot as
the runtime's preemption policy frees one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from scheduler.model import WorkClass
from scheduler.preemption import PreemptionPolicy
from simulation.pools import Pool
from simulation.return_flood import ReturnFlood
from simulation.spec import SimSpec
from simulation.trace import ANOMALY, SCREEN, Trace


class AnomalyWorkflow:
    """One run's injected anomaly events, from arrival to the work they cause."""

    def __init__(
        self,
        spec: SimSpec,
        devices_by_cell: np.ndarray,
        tier_class: np.ndarray,
        preemption: PreemptionPolicy,
    ) -> None:
        self.spec = spec
        self.devices_by_cell = devices_by_cell
        self.tier_class = tier_class
        self.preemption = preemption
        self.returns = ReturnFlood(spec)
        self._events = sorted(enumerate(spec.anomalies), key=lambda e: e[1].t_s)
        self._next_event = 0
        #: (event index, screened readings that detect it, region)
        self._pending: list[tuple[int, float, int]] = []

    def arrive(self, t: float, cum_screen_in: np.ndarray, flat: np.ndarray) -> None:
        """Events started by ``t`` wait for screening to pass this step's arrivals."""
        events = self._events
        while self._next_event < len(events) and events[self._next_event][1].t_s <= t:
            idx, ev = events[self._next_event]
            self._pending.append(
                (idx, cum_screen_in[ev.region] + flat[ev.region, SCREEN], ev.region)
            )
            self._next_event += 1

    def screened(
        self,
        i: int,
        t: float,
        queue: np.ndarray,
        cum_screen_out: np.ndarray,
        pools: Sequence[Pool],
        busy: np.ndarray,
        tr: Trace,
    ) -> None:
        """Screened: the anomaly workflow takes the affected devices' pending routine data."""
        still = []
        for idx, target, r in self._pending:
            if cum_screen_out[r] + 1e-9 < target:
                still.append((idx, target, r))
                continue
            ev = self.spec.anomalies[idx]
            if ev.silence:
                # Folded as screening and the correlator fold it; nothing is accelerated.
                self.returns.start(t, ev)
                continue
            share = min(1.0, ev.devices / max(self.devices_by_cell[r, ev.tier], 1.0))
            cls = int(self.tier_class[ev.tier])
            take = math.floor(queue[r, cls] * share)
            queue[r, cls] -= take
            queue[r, ANOMALY] += take
            tr.served[i, r, cls] += take
            tr.arrived[i, r, ANOMALY] += take
            free = int(pools[r].ready - busy[r])
            tr.anomaly_enqueued.append((idx, t, r, self._slot_release_s(1, free, busy[r])))
        self._pending = still
        self.returns.advance(t)
        tr.silence_incidents.update(self.returns.notified)

    def finish(self, t: float, tr: Trace) -> None:
        """The run ended: incidents still waiting for their first notice get it."""
        self.returns.finish(t)
        tr.silence_incidents.update(self.returns.notified)

    def _slot_release_s(self, anomaly_tasks: int, free_slots: int, busy_slots: float) -> float:
        """Time until a slot is free for an anomaly task: now, a chunk, or a whole routine batch."""
        sv = self.spec.service
        if free_slots >= anomaly_tasks:
            return 0.0
        if self.preemption.should_yield(anomaly_tasks, free_slots, WorkClass.STANDARD):
            chunk = self.preemption.chunk_size(sv.routine_rps_per_slot)
            return chunk / sv.routine_rps_per_slot
        return sv.batch_readings / sv.routine_rps_per_slot
