"""Maintenance windows on the virtual clock: booked, pre-drained, run, retried and rebooked.

The book and the operation runs are the runtime's own (scheduler.reservations,
scheduler.maintenance); this module plays the maintenance workers. They start
when the pre-drain starts (``drain_slots`` > 0) and are useful after the slot
start-up time; data slots handed back mid-batch are free after one chunk.
A window's start delay is how late the later of the two is past its start.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scheduler.maintenance import Action, OperationRun
from scheduler.reservations import ReservationBook
from simulation.spec import MaintenanceWindow, SimSpec


@dataclass
class _Running:
    run: OperationRun
    window: MaintenanceWindow
    failures_left: int
    busy_until_ts: float | None = None


class MaintenanceDriver:
    def __init__(self, spec: SimSpec, book: ReservationBook, regions: tuple[str, ...]) -> None:
        self.spec = spec
        self.book = book
        self.regions = regions
        self.chunk_s = spec.service.chunk_readings / spec.service.routine_rps_per_slot
        self._runs: list[_Running] = []
        for w in spec.maintenance:
            reservation = book.book(
                regions[w.region], spec.start_ts + w.start_s, w.duration_s, w.slots,
                w.operation, now_ts=spec.start_ts,
            )  # fmt: skip
            self._runs.append(_Running(OperationRun(reservation), w, w.failing_tries))
        n = len(regions)
        self._workers_ready_ts: list[float | None] = [None] * n
        self._released_ts: list[float | None] = [None] * n
        self._outcomes: dict[str, dict[str, Any]] = {}

    def data_shrunk(self, region: int, t_s: float, had_busy_slots: bool) -> None:
        """Data slots were taken back for maintenance at ``t_s``; busy ones yield within a chunk."""
        if self._released_ts[region] is None:
            delay = self.chunk_s if had_busy_slots else 0.0
            self._released_ts[region] = self.spec.start_ts + t_s + delay

    def tick(self, region: int, t_s: float, now_ts: float, held_slots: int) -> None:
        if held_slots <= 0:
            self._workers_ready_ts[region] = None
            self._released_ts[region] = None
        elif self._workers_ready_ts[region] is None:
            self._workers_ready_ts[region] = now_ts + self.spec.scaling.slot_startup_s
            if self._released_ts[region] is None:
                self._released_ts[region] = now_ts
        for item in self._runs:
            if item.window.region == region:
                self._advance(item, region, now_ts)

    def _advance(self, item: _Running, region: int, now_ts: float) -> None:
        run = item.run
        res = run.reservation
        action = run.next_action(now_ts)
        if action is Action.RUN:
            if res.reservation_id not in self._outcomes:
                ready = max(
                    now_ts,
                    self._workers_ready_ts[region] or now_ts,
                    self._released_ts[region] or now_ts,
                )
                self._outcomes[res.reservation_id] = {
                    "region": self.regions[region],
                    "reservation_id": res.reservation_id,
                    "operation": res.operation,
                    "attempt": res.attempt,
                    "start_s": res.start_ts - self.spec.start_ts,
                    "start_delay_s": max(0.0, ready - res.start_ts),
                    "state": "running",
                    "rebooked_as": None,
                    "rebooked_start_s": None,
                }
            item.run = run.started(now_ts)
            item.busy_until_ts = now_ts + item.window.work_s
        elif action is Action.CONTINUE and item.busy_until_ts is not None:
            if now_ts >= item.busy_until_ts:
                if item.failures_left > 0:
                    item.failures_left -= 1
                    item.run = run.failed(now_ts, "injected failure")
                else:
                    item.run = run.succeeded(now_ts)
                item.busy_until_ts = None
        elif action is Action.STOP:
            item.run = run.tick(now_ts)
        if item.run.state.terminal and res.reservation_id in self._outcomes:
            outcome = self._outcomes[res.reservation_id]
            outcome["state"] = item.run.state.value
            if item.run.needs_rebook:
                new, _alert = item.run.settle(self.book, now_ts)
                outcome["rebooked_as"] = new.reservation_id
                outcome["rebooked_start_s"] = new.start_ts - self.spec.start_ts
                item.run = item.run.resumed_in(new)

    def outcomes(self) -> list[dict[str, Any]]:
        """One record per window that started, in start order."""
        return sorted(self._outcomes.values(), key=lambda o: (o["start_s"], o["reservation_id"]))
