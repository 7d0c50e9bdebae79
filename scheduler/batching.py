"""Micro-batching per (region, tier): flush on size or on age.

Rows arrive as columns tagged with region and tier codes; they are grouped
with one sort and appended to per-key buffers. A buffer is cut into batches of
``max_readings`` as soon as it fills, and flushed whole once its oldest row is
older than the tier's age limit. Batch ids are deterministic:
``{producer_id}:{region}:{tier}:{sequence}``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from scheduler import defaults
from scheduler.model import Batch, Topology

#: ``(region code, age of the oldest row in s)`` → keep the region's first-tier buffer.
HoldFirstTier = Callable[[int, float], bool]


@dataclass(frozen=True)
class BatchingConfig:
    max_readings: int = defaults.BATCH_MAX_READINGS
    #: Age limit per tier name; tiers not listed use ``default_max_age_ms``.
    max_age_ms: Mapping[str, float] = field(
        default_factory=lambda: {
            "premium": defaults.PREMIUM_MAX_AGE_MS,
            "standard": defaults.STANDARD_MAX_AGE_MS,
        }
    )
    default_max_age_ms: float = defaults.STANDARD_MAX_AGE_MS

    def age_limit_s(self, tier: str) -> float:
        return self.max_age_ms.get(tier, self.default_max_age_ms) / 1000.0


@dataclass
class _Buffer:
    #: (device ids, event times, values, ingest times, already screened).
    chunks: list[tuple[npt.NDArray[np.generic], ...]] = field(default_factory=list)
    rows: int = 0
    oldest_ts: float = 0.0


class Batcher:
    """Buffers accepted rows per (region, tier) and hands out due micro-batches."""

    def __init__(
        self,
        topology: Topology,
        metrics: tuple[str, ...],
        producer_id: str,
        config: BatchingConfig | None = None,
    ) -> None:
        self.topology = topology
        self.metrics = metrics
        self.producer_id = producer_id
        self.config = config or BatchingConfig()
        self._buffers: dict[tuple[int, int], _Buffer] = {}
        self._seq = 0

    @property
    def buffered_readings(self) -> int:
        return sum(b.rows for b in self._buffers.values())

    def add(
        self,
        region: npt.NDArray[np.integer],
        tier: npt.NDArray[np.integer],
        device_id: npt.NDArray[np.uint64],
        ts: npt.NDArray[np.float64],
        values: npt.NDArray[np.float64],
        ingest_ts: npt.NDArray[np.float64],
        screened: npt.NDArray[np.bool_] | None = None,
    ) -> list[Batch]:
        """Append rows; returns the batches that filled up (flush on size).

        ``screened`` marks rows already sent to screening (``Batch.screened``)."""
        if len(device_id) == 0:
            return []
        if screened is None:
            screened = np.zeros(len(device_id), dtype=np.bool_)
        n_tiers = len(self.topology.tiers)
        key = region.astype(np.int64) * n_tiers + tier.astype(np.int64)
        order = np.argsort(key, kind="stable")
        sorted_key = key[order]
        starts = np.flatnonzero(np.r_[True, sorted_key[1:] != sorted_key[:-1]])
        ends = np.r_[starts[1:], len(key)]
        full: list[Batch] = []
        for s, e in zip(starts, ends, strict=True):
            k = int(sorted_key[s])
            rows = order[s:e]
            buf_key = (k // n_tiers, k % n_tiers)
            buf = self._buffers.setdefault(buf_key, _Buffer())
            if buf.rows == 0:
                buf.oldest_ts = float(ingest_ts[rows].min())
            buf.chunks.append(
                (device_id[rows], ts[rows], values[rows], ingest_ts[rows], screened[rows])
            )
            buf.rows += len(rows)
            if buf.rows >= self.config.max_readings:
                full.extend(self._cut(buf_key, buf, whole=False))
        return full

    def due(self, now_ts: float, hold: HoldFirstTier | None = None) -> list[Batch]:
        """Batches whose oldest row has reached its tier's age limit (flush on age).

        ``hold(region, age_s)``: asked only for the first tier's (premium's) buffers that
        are due; True keeps that buffer for a later call (``scheduler.premium_coalescing``)."""
        out: list[Batch] = []
        for key, buf in self._buffers.items():
            tier = self.topology.tiers[key[1]]
            age_s = now_ts - buf.oldest_ts
            if buf.rows and age_s >= self.config.age_limit_s(tier):
                if key[1] == 0 and hold is not None and hold(key[0], age_s):
                    continue
                out.extend(self._cut(key, buf, whole=True))
        return out

    def first_tier(self, now_ts: float, hold: HoldFirstTier | None = None) -> list[Batch]:
        """The first tier's (premium's) buffers, whatever their age, but those ``hold``
        keeps (as in ``due``): for a caller about to spend longer than that tier's age
        limit on other work before it looks again."""
        out: list[Batch] = []
        for key, buf in self._buffers.items():
            if key[1] != 0 or not buf.rows:
                continue
            if hold is not None and hold(key[0], now_ts - buf.oldest_ts):
                continue
            out.extend(self._cut(key, buf, whole=True))
        return out

    def cut_region(self, region: int, tiers: range) -> list[Batch]:
        """Everything buffered for ``region`` in ``tiers`` (codes), whatever its age: sent
        ahead of screening copies of that region's newer readings, so screening still
        takes each device's readings in time order."""
        out: list[Batch] = []
        for tier in tiers:
            buf = self._buffers.get((region, tier))
            if buf is not None and buf.rows:
                out.extend(self._cut((region, tier), buf, whole=True))
        return out

    def next_due_ts(self) -> float | None:
        """When the next age flush falls due, so a producer loop can sleep until then."""
        due = [
            b.oldest_ts + self.config.age_limit_s(self.topology.tiers[k[1]])
            for k, b in self._buffers.items()
            if b.rows
        ]
        return min(due) if due else None

    def drain(self) -> list[Batch]:
        """Everything buffered, whatever its age (shutdown)."""
        out: list[Batch] = []
        for key, buf in self._buffers.items():
            if buf.rows:
                out.extend(self._cut(key, buf, whole=True))
        return out

    def _cut(self, key: tuple[int, int], buf: _Buffer, whole: bool) -> list[Batch]:
        cols = [np.concatenate([c[k] for c in buf.chunks]) for k in range(5)]
        size = self.config.max_readings
        n = len(cols[0])
        n_out = n if whole else (n // size) * size
        batches = [self._make(key, *(c[i : i + size] for c in cols)) for i in range(0, n_out, size)]
        rest = n - n_out
        if rest:
            buf.chunks = [tuple(c[n_out:] for c in cols)]
            buf.oldest_ts = float(cols[3][n_out:].min())
        else:
            buf.chunks = []
        buf.rows = rest
        return batches

    def _make(self, key: tuple[int, int], *cols: npt.NDArray[np.generic]) -> Batch:
        dev, ts, vals, ing, screened = cols
        region, tier = self.topology.regions[key[0]], self.topology.tiers[key[1]]
        self._seq += 1
        return Batch(
            batch_id=f"{self.producer_id}:{region}:{tier}:{self._seq}",
            region=region,
            tier=tier,
            metrics=self.metrics,
            device_id=dev,  # type: ignore[arg-type]
            ts=ts,  # type: ignore[arg-type]
            values=vals,  # type: ignore[arg-type]
            ingest_ts=ing,  # type: ignore[arg-type]
            screened=screened if screened.any() else None,  # type: ignore[arg-type]
        )
