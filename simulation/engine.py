"""The simulator: a fixed-step virtual clock over per-region queues and slots.

Work is fluid but counted in whole readings, per region and class (anomaly,
screen, premium, standard), so conservation is checked exactly. Every
decision is taken by the runtime's own policy objects: placement with region
health, the scaling policy (or a baseline), the capacity ledger, preemption,
the reservation book with pre-drain and operation runs. Latencies come
afterwards from the cumulative arrival and service curves (simulation.latency).
Pools are sized by the autoscaler's own assembly (scheduler.region_sizing),
fed the simulated queues under the runtime's queue names.
"""

from __future__ import annotations

import math

import numpy as np

from scheduler.capacity import CapacityBudget, CapacityLedger
from scheduler.forecast import DailyProfile
from scheduler.geography import TransferCostMatrix
from scheduler.health import RegionHealth
from scheduler.maintenance import drain_slots
from scheduler.model import Topology, queue_name
from scheduler.placement import PlacementPolicy, RegionLoad, round_robin_place
from scheduler.preemption import PreemptionConfig, PreemptionPolicy
from scheduler.reservations import ReservationBook
from simulation.anomaly_sim import AnomalyWorkflow
from simulation.dispatch import Dispatcher
from simulation.ingest_sim import Ingest
from simulation.loads import LoadPattern
from simulation.maintenance_sim import MaintenanceDriver
from simulation.pools import Pool, make_sizer, observe_region, scaler_settings, uses_forecast
from simulation.spec import SimSpec
from simulation.trace import ANOMALY, CLASSES, PREMIUM, SCREEN, STANDARD, Trace

#: The classes in a data worker's ``-Q`` order (model.DATA_QUEUE_KINDS: premium before
#: the screening of other tiers), as the autoscaler sees its queues; the one simulated
#: screening class stands for both screening queues.
_SIZING_ORDER = [ANOMALY, PREMIUM, SCREEN, STANDARD]


def _integer_arrivals(rate: np.ndarray, step_s: float) -> np.ndarray:
    """Whole readings per step from a rate, carrying fractions so totals match the integral."""
    cum = np.floor(np.cumsum(rate * step_s, axis=0))
    return np.diff(cum, axis=0, prepend=np.zeros((1, *rate.shape[1:])))


class Simulator:
    """One run of a SimSpec; ``run()`` returns the Trace the figures are computed from."""

    def __init__(self, spec: SimSpec) -> None:
        self.spec = spec
        sv = spec.service
        self.n_steps = round(spec.duration_s / spec.step_s)
        self.ctrl_every = max(1, round(spec.control_period_s / spec.step_s))
        fleet = spec.fleet
        self.regions = fleet.regions
        self.n_regions = len(self.regions)
        self.topology = Topology(tiers=fleet.tiers, regions=fleet.regions)
        self.cohorts = fleet.cohorts()
        self.tier_class = np.array([PREMIUM if t == "premium" else STANDARD for t in fleet.tiers])
        self.cohort_class = self.tier_class[self.cohorts.tier]
        self.rate_per_slot = np.array(
            [sv.anomaly_rps_per_slot, sv.screen_rps_per_slot, sv.routine_rps_per_slot,
             sv.routine_rps_per_slot]
        )  # fmt: skip
        #: Slot-seconds per reading relative to routine work: the pool's common unit.
        self.routine_equiv = sv.routine_rps_per_slot / self.rate_per_slot
        self.budget = np.array([s.capacity_slots for s in spec.sites])
        self.cost_matrix = TransferCostMatrix.from_distance(spec.sites)
        self.placement = PlacementPolicy(self.topology, spec.sites, self.cost_matrix)
        self.health = RegionHealth(spec.silence_timeout_s, regions=self.regions)
        self.preemption = PreemptionPolicy(PreemptionConfig(chunk_readings=sv.chunk_readings))
        self.ledgers = [CapacityLedger(self._class_budget(int(b))) for b in self.budget]
        #: Each region's queues under the runtime's names, in _SIZING_ORDER.
        self.queue_names = [
            tuple(queue_name(r, CLASSES[k].value) for k in _SIZING_ORDER) for r in self.regions
        ]
        self.book = ReservationBook(
            {r: int(b) for r, b in zip(self.regions, self.budget, strict=True)},
            {r: self.ledgers[i].budget.premium_guarantee_slots for i, r in enumerate(self.regions)},
        )
        self.maintenance = MaintenanceDriver(spec, self.book, self.regions)
        self.reserved = np.zeros(self.n_regions, dtype=np.int64)
        self.devices_by_cell = np.zeros((self.n_regions, len(fleet.tiers)))
        np.add.at(self.devices_by_cell, (fleet.home_region, fleet.tier), 1.0)
        self.mean_interval_s = float(np.mean(fleet.reading_interval_s))
        self.dispatch = Dispatcher(spec, self.ledgers, self.rate_per_slot)

    def _class_budget(self, total: int) -> CapacityBudget:
        sh = self.spec.shares
        return CapacityBudget(
            total_slots=total,
            premium_guarantee_slots=int(total * sh.premium_guarantee),
            standard_min_slots=int(total * sh.standard_min),
            anomaly_burst_slots=int(total * sh.anomaly_burst),
            screen_min_slots=int(total * sh.screen_min),
        )

    def _cell_arrivals(self) -> tuple[np.ndarray, np.ndarray]:
        """Accepted-at-validation and dead-lettered readings per step and (region, tier)."""
        t = np.arange(self.n_steps, dtype=np.float64) * self.spec.step_s
        offered = _integer_arrivals(self.spec.pattern.rate_rps(t), self.spec.step_s)
        invalid = _integer_arrivals(
            self.spec.pattern.rate_rps(t) * self.spec.service.invalid_share, self.spec.step_s
        )
        invalid = np.minimum(invalid, offered)
        return offered - invalid, invalid

    def _pools(self, first_work_rps: np.ndarray) -> list[Pool]:
        spec = self.spec
        pools = []
        for r in range(self.n_regions):
            profile = None
            if spec.history_pattern is not None and uses_forecast(spec.scaler):
                profile = self._learned_profile(spec.history_pattern, r)
            lo = self.ledgers[r].budget.premium_guarantee_slots // 4 + 1
            sizer = make_sizer(
                spec.scaler, spec.scaling, self.ledgers[r].budget, lo,
                spec.service.batch_readings, profile, spec.keda_list_length,
            )  # fmt: skip
            if spec.initial_slots is not None:
                initial = spec.initial_slots[r]
            else:
                per_slot = spec.service.routine_rps_per_slot * spec.scaling.target_utilization
                initial = max(lo, math.ceil(first_work_rps[r] / per_slot))
            pools.append(
                Pool(sizer, min(initial, int(self.budget[r])), spec.scaling.slot_startup_s)
            )
        return pools

    def _home_work_rps(self, t_s: np.ndarray, pattern: LoadPattern | None = None) -> np.ndarray:
        """Routine-equivalent work per region if all data stayed home: routine plus screening."""
        rate = (pattern or self.spec.pattern).rate_rps(t_s)
        routine = rate.sum(axis=2)
        return np.asarray(routine * (1.0 + self.routine_equiv[SCREEN]))

    def _learned_profile(self, history: LoadPattern, region: int) -> DailyProfile:
        """The daily curve as it learned, observation by observation, from yesterday's traffic.

        ``history`` is yesterday's own generator (its own noise, its own day),
        read each minute of the day before ``start_ts``: what the scaler saw
        then, never what this run will offer.
        """
        profile = DailyProfile(bucket_s=300.0)
        t = np.arange(0.0, 86_400.0, 60.0)
        work = self._home_work_rps(t, history)[:, region]
        for ts, w in zip(t + self.spec.start_ts - 86_400.0, work, strict=True):
            profile.observe(float(ts), float(w))
        return profile

    def run(self) -> Trace:
        spec, sv = self.spec, self.spec.service
        n, n_r, dt = self.n_steps, self.n_regions, spec.step_s
        accepted, invalid = self._cell_arrivals()
        tr = Trace.empty(spec, n, n_r, self.regions)
        tr.dead_lettered = float(invalid.sum())
        coh = self.cohorts
        ingest = Ingest(coh, self.cohort_class, self.placement, n_r)
        ingest.hold_unscreened = spec.admission_wait_budget_s is not None
        pools = self._pools(self._home_work_rps(np.zeros(1))[0])
        tr.scaler_settings = tuple(scaler_settings(p.sizer.scaler) for p in pools)
        queue = np.zeros((n_r, len(CLASSES)))
        dest = np.full(len(coh), -1, dtype=np.intp)
        grant_slots = np.zeros((n_r, len(CLASSES)))
        data_cap = self.budget.astype(np.int64).copy()
        busy_prev = np.zeros(n_r)
        period_in = np.zeros((n_r, len(CLASSES)))
        period_busy = np.zeros(n_r)
        cum_screen_in = np.zeros(n_r)
        cum_screen_out = np.zeros(n_r)
        drain_rps = np.full(n_r, np.inf)  # nothing measured yet: admit (scheduler.admission)
        drain_window = np.zeros(n_r)
        anomalies = AnomalyWorkflow(spec, self.devices_by_cell, self.tier_class, self.preemption)
        rr_healthy = -1
        t_all = np.arange(n) * dt
        down_all = np.zeros((n, n_r), dtype=bool)
        for p in spec.partitions:
            down_all[(t_all >= p.start_s) & (t_all < p.end_s), p.region] = True

        for i in range(n):
            t = i * dt
            now_ts = spec.start_ts + t
            down = down_all[i]
            for pool in pools:
                pool.advance(t)
            if i % self.ctrl_every == 0:
                for r, name in enumerate(self.regions):
                    if not down[r]:
                        self.health.heartbeat(name, now_ts)
                healthy = self.health.healthy_mask(self.regions, now_ts)
                ready = np.array([p.ready for p in pools], dtype=np.float64)
                load = RegionLoad(
                    backlog_readings=queue[:, PREMIUM] + queue[:, STANDARD],
                    service_rps=np.where(down, 0.0, ready * sv.routine_rps_per_slot),
                    free_slots=np.maximum(ready - busy_prev, 0.0),
                )
                dest = self.placement.place(
                    coh.home_region, coh.allowed_mask, coh.tier, healthy, load
                ).astype(np.intp)
                if healthy != rr_healthy:
                    tr.rr_dest_share[:] = self._round_robin_share(healthy)
                    rr_healthy = healthy
                data_cap = self._control_tick(
                    i, t, now_ts, pools, queue, period_in, period_busy, busy_prev
                )
                period_in[:] = 0.0
                period_busy[:] = 0.0

            cell = accepted[i]
            tr.offered[i] = cell.sum(axis=1)
            cap: float | np.ndarray = spec.backlog_cap_readings
            if spec.admission_wait_budget_s is not None:
                # Little's law on the measured standard drain, as the runtime's gate does.
                cap = spec.admission_wait_budget_s * drain_rps
            flat = ingest.route(i, cell, dest, queue, cap, tr)

            # Anomalies: an event's first abnormal readings reach the screen queue.
            anomalies.arrive(t, cum_screen_in, flat)

            queue += flat
            tr.arrived[i] = flat
            cum_screen_in += flat[:, SCREEN]

            self.dispatch.allocate(queue, self.reserved, grant_slots)
            served = self.dispatch.serve(queue, pools, grant_slots, down, t)
            queue -= served
            tr.served[i] = served
            cum_screen_out += served[:, SCREEN]
            busy = (served / self.rate_per_slot).sum(axis=1) / dt
            tr.busy_slots[i] = busy
            period_busy += busy * dt
            period_in += flat
            drain_window += served[:, STANDARD]
            if i % self.ctrl_every == self.ctrl_every - 1:
                drain_rps = drain_window / spec.control_period_s
                drain_window[:] = 0.0

            anomalies.screened(i, t, queue, cum_screen_out, pools, busy, tr)
            busy_prev = busy
            tr.queue[i] = queue
            tr.ready[i] = [p.ready for p in pools]
            tr.provisioned[i] = [p.provisioned for p in pools]
            tr.data_cap[i] = data_cap
            tr.maintenance_slots[i] = self.reserved
            tr.down[i] = down
        anomalies.finish(n * dt, tr)
        tr.final_queue = queue.copy()
        tr.final_buffered = ingest.held
        tr.accepted_total = float(accepted.sum())
        tr.maintenance_runs = self.maintenance.outcomes()
        return tr

    def _round_robin_share(self, healthy: int) -> np.ndarray:
        """Share of each cohort the round-robin baseline sends to each region.

        Six copies of a cohort, placed in turn, split it evenly over its 1, 2
        or 3 allowed healthy regions, whatever turn the rotation is on.
        """
        coh, copies = self.cohorts, 6
        rr = round_robin_place(
            np.repeat(coh.home_region, copies), np.repeat(coh.allowed_mask, copies),
            np.repeat(coh.tier, copies), healthy, self.n_regions,
        ).astype(np.intp).reshape(len(coh), copies)  # fmt: skip
        return np.asarray((rr[:, :, None] == np.arange(self.n_regions)).mean(axis=1))

    def _control_tick(
        self,
        i: int,
        t: float,
        now_ts: float,
        pools: list[Pool],
        queue: np.ndarray,
        period_in: np.ndarray,
        period_busy: np.ndarray,
        busy_prev: np.ndarray,
    ) -> np.ndarray:
        """Scaling, maintenance pre-drain and the ledger's class grants, once per control period."""
        spec = self.spec
        caps = np.zeros(self.n_regions, dtype=np.int64)
        for r, (name, pool) in enumerate(zip(self.regions, pools, strict=True)):
            held = drain_slots(now_ts, self.book, name, spec.pre_drain_lead_s)
            caps[r] = pool.sizer.data_cap_slots(held)
            if i == 0:
                # Nothing measured yet: the pool keeps the size it was given for the first load.
                target = min(pool.provisioned, int(caps[r]))
            else:
                obs = observe_region(
                    self.queue_names[r], now_ts,
                    (queue[r] * self.routine_equiv)[_SIZING_ORDER].tolist(),
                    (period_in[r] * self.routine_equiv)[_SIZING_ORDER].tolist(),
                    spec.control_period_s, spec.service.routine_rps_per_slot,
                    period_busy[r], pool.provisioned, held,
                )  # fmt: skip
                target = pool.sizer.size(obs).region_slots
            if pool.provisioned > caps[r]:
                self.maintenance.data_shrunk(r, t, busy_prev[r] > caps[r])
            pool.resize(t, target)
            self.maintenance.tick(r, t, now_ts, held)
            self.reserved[r] = self.book.reserved_slots(name, now_ts)
        return caps
