"""What a run recorded, per step: arrivals, service, queues and slots per region and class."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from scheduler.incident import Incident
from scheduler.model import QUEUE_ORDER
from simulation.spec import SimSpec

#: Classes in queue order; the engine's arrays index them in this order.
CLASSES = QUEUE_ORDER
ANOMALY, SCREEN, PREMIUM, STANDARD = range(4)


@dataclass
class Trace:
    """Arrays are (steps, regions[, classes]); readings are whole numbers held in float64."""

    spec: SimSpec
    regions: tuple[str, ...]
    #: Readings offered by devices, by home region (before placement and ingest holds).
    offered: np.ndarray
    arrived: np.ndarray
    served: np.ndarray
    queue: np.ndarray
    ready: np.ndarray
    provisioned: np.ndarray
    busy_slots: np.ndarray
    data_cap: np.ndarray
    maintenance_slots: np.ndarray
    down: np.ndarray
    buffered: np.ndarray
    backpressured: np.ndarray
    placed: np.ndarray
    placed_home: np.ndarray
    moved_bytes: np.ndarray
    moved_cost: np.ndarray
    rr_moved_bytes: np.ndarray
    rr_moved_cost: np.ndarray
    rr_dest_share: np.ndarray
    dead_lettered: float = 0.0
    accepted_total: float = 0.0
    residency_violations: float = 0.0
    final_queue: np.ndarray = field(default_factory=lambda: np.zeros(0))
    final_buffered: float = 0.0
    #: (event index, detected at t_s, region, slot release delay s) per anomaly workflow.
    anomaly_enqueued: list[tuple[int, float, int, float]] = field(default_factory=list)
    #: Incidents the correlator notified for silence events (simulation.return_flood), by id.
    silence_incidents: dict[str, Incident] = field(default_factory=dict)
    maintenance_runs: list[dict[str, Any]] = field(default_factory=list)
    #: How each region's scaler was configured, in its users' terms.
    scaler_settings: tuple[str, ...] = ()

    @classmethod
    def empty(cls, spec: SimSpec, n: int, n_r: int, regions: tuple[str, ...]) -> Trace:
        n_c = len(CLASSES)
        n_cohorts = len(spec.fleet.cohorts())
        return cls(
            spec=spec,
            regions=regions,
            offered=np.zeros((n, n_r)),
            arrived=np.zeros((n, n_r, n_c)),
            served=np.zeros((n, n_r, n_c)),
            queue=np.zeros((n, n_r, n_c)),
            ready=np.zeros((n, n_r)),
            provisioned=np.zeros((n, n_r)),
            busy_slots=np.zeros((n, n_r)),
            data_cap=np.zeros((n, n_r)),
            maintenance_slots=np.zeros((n, n_r)),
            down=np.zeros((n, n_r), dtype=bool),
            buffered=np.zeros(n),
            backpressured=np.zeros(n),
            placed=np.zeros(n),
            placed_home=np.zeros(n),
            moved_bytes=np.zeros(n),
            moved_cost=np.zeros(n),
            rr_moved_bytes=np.zeros(n),
            rr_moved_cost=np.zeros(n),
            rr_dest_share=np.zeros((n_cohorts, n_r)),
        )

    @property
    def t_s(self) -> np.ndarray:
        return np.arange(self.arrived.shape[0]) * self.spec.step_s
