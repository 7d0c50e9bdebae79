"""What a simulation run is given: service model, fleet, load, scaler and injected events.

All times in a spec are seconds since the start of the run; the engine adds
``start_ts`` (epoch seconds) when it talks to the core policies.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from scheduler.defaults import (
    BATCH_MAX_READINGS,
    PREMIUM_MAX_AGE_MS,
    ROUTINE_CHUNK_READINGS,
    SCREEN_MAX_AGE_MS,
    STANDARD_MAX_AGE_MS,
)
from scheduler.geography import RegionSite
from scheduler.maintenance import DEFAULT_PRE_DRAIN_LEAD_S
from scheduler.scaling import ScalingConfig
from scheduler.work_budget import WorkBudget
from simulation.fleet import Fleet
from simulation.loads import LoadPattern

#: 2026-11-02 00:00:00 UTC, a Monday: runs start at midnight so "hour of day" reads plainly.
DEFAULT_START_TS = 1_793_577_600.0


@dataclass(frozen=True)
class ServiceModel:
    """Per-slot service rates and batching, calibrated from measurements on this machine.

    ``routine_rps_per_slot``: DESIGN measures 240,000–340,000 readings/s end to
    end for columnar batches of 5,000 on 2 cores shared by producer, Redis and
    workers; one worker process alone is in the order of 60,000 readings/s.
    Screening costs the same: its kernel (scheduler.detection.screen with state
    packing) runs at ~1.9M readings/s and the rollup kernel at ~9M/s on one
    core here, so both are dominated by the same per-batch costs (decode, one
    MGET and one MSET, Celery's task overhead). Anomaly workflows (accelerated
    routine processing of the affected devices) cost as routine work.
    """

    routine_rps_per_slot: float = 60_000.0
    screen_rps_per_slot: float = 60_000.0
    anomaly_rps_per_slot: float = 60_000.0
    batch_readings: int = BATCH_MAX_READINGS
    premium_max_age_s: float = PREMIUM_MAX_AGE_MS / 1000.0
    standard_max_age_s: float = STANDARD_MAX_AGE_MS / 1000.0
    #: The producer coalesces screening copies per region, flushing on size or at this age.
    screen_max_age_s: float = SCREEN_MAX_AGE_MS / 1000.0
    chunk_readings: int = ROUTINE_CHUNK_READINGS
    #: Share of offered readings that fail validation and go to the dead-letter stream.
    invalid_share: float = 1e-5


@dataclass(frozen=True)
class ClassShares:
    """Capacity classes per region as fractions of the region budget (CapacityBudget)."""

    premium_guarantee: float = 0.2
    standard_min: float = 0.1
    anomaly_burst: float = 0.05
    screen_min: float = 0.1


@dataclass(frozen=True)
class Partition:
    """Region ``region`` stops heartbeating and its workers reach nothing in [start_s, end_s)."""

    region: int
    start_s: float
    end_s: float


@dataclass(frozen=True)
class AnomalyEvent:
    """``devices`` devices of one region's cohort turn abnormal at ``t_s``.

    ``tier`` picks the tier of the affected devices; ``readings_to_detect`` is
    how many abnormal readings the detector needs and ``detected_share`` the share
    of devices it catches (scenarios measure both on the real detector:
    simulation.detector_cal).
    """

    t_s: float
    region: int
    devices: int
    tier: int = 1
    readings_to_detect: int = 1
    kind: str = "spike"
    #: Share of the affected devices the detector alerts on at all (simulation.detector_cal);
    #: the rest count against recall and not in detection latency.
    detected_share: float = 1.0
    #: Readings each detected device needed in calibration; when given, every simulated
    #: device draws its own from these instead of taking ``readings_to_detect``.
    readings_needed: tuple[int, ...] = ()
    #: The devices' alerts are silences (a reconnect): their returns are folded by the
    #: runtime's rules (``simulation.return_flood``) and no accelerated work is spent on them.
    silence: bool = False
    #: Screening batches the returns of a silence are folded in (readings); 0: by the
    #: screening copies' flush age, as a quiet machine batches them.
    batch_readings: int = 0


@dataclass(frozen=True)
class MaintenanceWindow:
    """A window booked in the ReservationBook; ``failing_tries`` tries fail before one succeeds."""

    region: int
    start_s: float
    duration_s: float
    slots: int
    operation: str = "compact_detector_state"
    work_s: float = 20.0
    failing_tries: int = 0


@dataclass(frozen=True)
class SimSpec:
    """One simulation run."""

    fleet: Fleet
    sites: tuple[RegionSite, ...]
    pattern: LoadPattern
    duration_s: float
    step_s: float = 0.1
    control_period_s: float = 1.0
    seed: int = 0
    start_ts: float = DEFAULT_START_TS
    #: A name from simulation.pools.SCALERS: "policy" (ScalingPolicy) or a baseline
    #: ("celery", "hpa", "keda"), each also with "+forecast" (a predictive floor).
    scaler: str = "policy"
    scaling: ScalingConfig = field(default_factory=ScalingConfig)
    #: The traffic of the day before the run (its own generator, never this run's
    #: pattern): the daily curve learns from it online, as a deployed scaler would
    #: have learned yesterday. None: no history, so no daily curve.
    history_pattern: LoadPattern | None = None
    #: KEDA's per-replica listLength target, in tasks (micro-batches).
    keda_list_length: int = 1
    service: ServiceModel = field(default_factory=ServiceModel)
    shares: ClassShares = field(default_factory=ClassShares)
    partitions: tuple[Partition, ...] = ()
    anomalies: tuple[AnomalyEvent, ...] = ()
    maintenance: tuple[MaintenanceWindow, ...] = ()
    pre_drain_lead_s: float = DEFAULT_PRE_DRAIN_LEAD_S
    silence_timeout_s: float = 5.0
    #: Above this many queued standard readings per region, ingest answers with backpressure.
    backlog_cap_readings: float = 50_000_000.0
    #: Admission as the runtime does it (scheduler.admission): standard readings are held
    #: at ingest while a region's queued standard readings exceed this many seconds of
    #: its measured standard drain rate; None keeps ``backlog_cap_readings``.
    admission_wait_budget_s: float | None = None
    #: The budget of anomaly work above premium (scheduler.work_budget), per region's
    #: slot time; None leaves anomaly work unbounded.
    anomaly_work: WorkBudget | None = None
    #: Spans excluded from "normal operation" (spikes, partitions) for the wastage figure.
    disturbances: tuple[tuple[float, float], ...] = ()
    #: Load steps (t_s, regions) whose scaling reaction is measured.
    load_steps: tuple[tuple[float, tuple[int, ...]], ...] = ()
    #: Slots each region starts with; None sizes them for the load at t = 0.
    initial_slots: tuple[int, ...] | None = None
    labels: dict[str, str] = field(default_factory=dict)
