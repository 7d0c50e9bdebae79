"""Routine processing of a batch: rollups plus the latency it saw, as pure effects."""

from __future__ import annotations

from dataclasses import dataclass

from scheduler.latency import bucket_counts
from scheduler.model import Batch
from scheduler.rollup import RollupDelta, compute_rollups


@dataclass(frozen=True)
class RoutineEffects:
    delta: RollupDelta
    #: Histograms keyed "ingest" (ingest → processed) and "event" (event time → processed).
    latency: dict[str, dict[int, int]]
    readings: int


def routine_effects(batch: Batch, processed_ts: float) -> RoutineEffects:
    return RoutineEffects(
        delta=compute_rollups(batch.device_id, batch.ts, batch.values),
        latency={
            "ingest": bucket_counts((processed_ts - batch.ingest_ts) * 1000.0),
            "event": bucket_counts((processed_ts - batch.ts) * 1000.0),
        },
        readings=len(batch),
    )
