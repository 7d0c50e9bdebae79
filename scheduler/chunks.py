"""A routine batch cut into fixed chunks, each applied once under its claim id.

Chunk ``i`` of a batch is claimed as ``f"{batch_id}#{i}"`` (``claim_id``) in the
plan of the *original* batch (``PreemptionPolicy.plan_chunks`` on its ``n``): a
remainder keeps the original batch id and carries ``chunk0`` (the index of its
first chunk) and ``chunk_readings``, so every delivery of any part of a batch
walks the same claim ids. ``tasks/routine.py`` explains why that makes
preemption, retries, redelivery and acceleration safe.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import numpy.typing as npt

from scheduler import defaults
from scheduler.codec import decode_batch, encode_batch
from scheduler.errors import InvalidBatch
from scheduler.model import Batch
from scheduler.preemption import PreemptionConfig, PreemptionPolicy
from scheduler.registry import Registry
from scheduler.validation import REASON_CODE


def claim_id(batch_id: str, chunk_index: int) -> str:
    """The claim of chunk ``chunk_index`` (original plan) of batch ``batch_id``."""
    return f"{batch_id}#{chunk_index}"


@dataclass
class ChunkCursor:
    """A routine message's readings and how far through its chunks the task is."""

    batch: Batch
    #: Index of this message's first chunk in the original batch's plan.
    chunk0: int
    chunk_readings: int
    #: Soft time limits this batch hit without progress so far.
    stalls: int = 0
    #: Chunks of this message finished (applied now, or found claimed).
    done: int = 0
    applied_readings: int = 0
    skipped_readings: int = 0
    #: Readings of this message dead-lettered by re-validation.
    invalid_readings: int = 0

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> ChunkCursor:
        batch = decode_batch(payload)
        try:
            chunk0 = int(payload.get("chunk0", 0))
            size = int(payload.get("chunk_readings", defaults.ROUTINE_CHUNK_READINGS))
            stalls = int(payload.get("stalls", 0))
        except (TypeError, ValueError) as exc:
            raise InvalidBatch(f"bad chunk fields: {exc}") from exc
        if chunk0 < 0 or size < 1:
            raise InvalidBatch(f"bad chunk fields: chunk0={chunk0} chunk_readings={size}")
        return cls(batch, chunk0, size, stalls)

    @cached_property
    def plan(self) -> list[slice]:
        return PreemptionPolicy(PreemptionConfig(chunk_readings=self.chunk_readings)).plan_chunks(
            len(self.batch)
        )

    @property
    def n_chunks(self) -> int:
        return math.ceil(len(self.batch) / self.chunk_readings)

    @property
    def finished(self) -> bool:
        return self.done >= self.n_chunks

    def chunk(self, k: int) -> Batch:
        """Chunk ``k`` of this message, under its claim id in the original plan."""
        return self.batch.take(self.plan[k], claim_id(self.batch.batch_id, self.chunk0 + k))

    def rest_payload(self, stalled: bool = False) -> dict[str, Any]:
        """The unfinished chunks as a message of their own (same batch id, original indexes)."""
        start = self.done * self.chunk_readings
        rest = self.batch.take(slice(start, len(self.batch)), self.batch.batch_id)
        rest.attempt = self.batch.attempt + 1
        payload = encode_batch(rest)
        payload.update(
            chunk0=self.chunk0 + self.done,
            chunk_readings=self.chunk_readings,
            stalls=self.stalls + 1 if stalled else 0,
        )
        return payload

    def rest_claim_ids(self) -> list[tuple[str, int]]:
        plan = self.plan
        return [
            (claim_id(self.batch.batch_id, self.chunk0 + k), plan[k].stop - plan[k].start)
            for k in range(self.done, self.n_chunks)
        ]


def chunks_holding(payload: dict[str, Any], device_ids: Iterable[int]) -> list[int]:
    """Original-plan indexes of the payload's chunks that hold any of ``device_ids``."""
    cursor = ChunkCursor.from_payload(payload)
    wanted = np.fromiter(device_ids, dtype=np.uint64)
    hit = np.flatnonzero(np.isin(cursor.batch.device_id, wanted))
    return sorted({cursor.chunk0 + int(i) // cursor.chunk_readings for i in hit})


def invalid_rows(batch: Batch, registry: Registry | None) -> npt.NDArray[np.uint8]:
    """Reason code per row (0 = fine): not finite, or a device the registry does not know."""
    reason = np.zeros(len(batch), dtype=np.uint8)
    if registry is not None:
        reason[registry.lookup(batch.device_id) < 0] = REASON_CODE["unknown_device"]
    finite = np.isfinite(batch.ts) & np.isfinite(batch.values).all(axis=1)
    reason[~finite] = REASON_CODE["not_finite"]
    return reason
