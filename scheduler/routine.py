"""Routine processing of a batch: rollups plus the latency it saw, as pure effects."""

from __future__ import annotations

from dataclasses import dataclass

from scheduler.latency import bucket_counts
from scheduler.model import Batch
from scheduler.rollup import RollupDelta, compute_rollups

#: The latency stage from a reading's first offer to the start of the task processing it.
STARTED_STAGE = "started"


@dataclass(frozen=True)
class RoutineEffects:
    delta: RollupDelta
    #: Histograms keyed "ingest" (ingest → processed), "event" (event time → processed)
    #: and, when the task's start is given, "started" (ingest → the task holding the
    #: reading started): what the reading spent before a worker took it, against what it
    #: spent in the task.
    latency: dict[str, dict[int, int]]
    readings: int


def routine_effects(
    batch: Batch, processed_ts: float, started_ts: float | None = None
) -> RoutineEffects:
    latency = {
        "ingest": bucket_counts((processed_ts - batch.ingest_ts) * 1000.0),
        "event": bucket_counts((processed_ts - batch.ts) * 1000.0),
    }
    if started_ts is not None:
        latency[STARTED_STAGE] = bucket_counts((started_ts - batch.ingest_ts) * 1000.0)
    return RoutineEffects(
        delta=compute_rollups(batch.device_id, batch.ts, batch.values),
        latency=latency,
        readings=len(batch),
    )
