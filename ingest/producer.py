"""The producer: validate, classify, place, micro-batch and publish readings.

Accepts single readings (dicts or JSON bytes, as devices and gateways send
them) and columnar arrays (as a gateway batch hands them over). Bad readings
go to the dead-letter stream with their reason; they never fail the good ones
beside them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np
import numpy.typing as npt

from scheduler.batching import Batcher, BatchingConfig
from scheduler.errors import InvalidReading
from scheduler.model import Batch, DeadLetter
from scheduler.registry import Registry
from scheduler.validation import REASONS, Limits, check_columns, parse_reading
from stores.protocols import StateStore


class Publisher(Protocol):
    """Sends batches on. A publisher may also define ``publish_many(batches)`` (batches
    flushed together), and, if it buffers (coalesced screening copies), ``poll(now_ts)``
    and ``flush()``; the producer calls them when present."""

    def publish(self, batch: Batch) -> None: ...


#: Chooses each reading's processing region from (registry, row index); home region by default.
Placer = Callable[[Registry, npt.NDArray[np.int64]], npt.NDArray[np.integer]]


def home_placer(registry: Registry, rows: npt.NDArray[np.int64]) -> npt.NDArray[np.integer]:
    return registry.home_region[rows]


#: Per region code, True where the region's routine backlog is past its cap.
BacklogGate = Callable[[], npt.NDArray[np.bool_]]

_NONE = np.empty(0, dtype=np.intp)


@dataclass(frozen=True)
class IngestResult:
    accepted: int
    rejected: int
    #: Rejections by reason code, e.g. {"unknown_device": 3}.
    reasons: Mapping[str, int]
    #: Readings not taken because their region's backlog is past its cap: explicit
    #: backpressure. They are neither accepted nor dead-lettered; the caller still holds
    #: them and offers them again later. Indexes into what the caller passed in.
    pushed_back_index: npt.NDArray[np.intp] = field(default_factory=lambda: _NONE)
    #: The region code each pushed-back reading was bound for: the caller may hold them
    #: per region and offer again only those whose region is open (``Producer.closed``).
    pushed_back_region: npt.NDArray[np.intp] = field(default_factory=lambda: _NONE)

    @property
    def pushed_back(self) -> int:
        return int(self.pushed_back_index.size)


class Producer:
    def __init__(
        self,
        registry: Callable[[], Registry],
        publisher: Publisher,
        store: StateStore,
        limits: Limits | None = None,
        batching: BatchingConfig | None = None,
        producer_id: str = "p0",
        placer: Placer = home_placer,
        clock: Callable[[], float] = time.time,
        counter_flush_s: float = 0.1,
        backlog_gate: BacklogGate | None = None,
    ) -> None:
        """``backlog_gate`` turns on backpressure: readings of every tier but the first
        (premium is never pushed back) bound for a region past its cap are handed back."""
        self._registry = registry
        self.publisher = publisher
        self.store = store
        self.limits = limits or Limits()
        self.clock = clock
        self.placer = placer
        self.backlog_gate = backlog_gate
        reg = registry()
        self.batcher = Batcher(reg.topology, self.limits.metrics, producer_id, batching)
        self.published_batches = 0
        self.published_readings = 0
        # Ingest counters go to the store at most every counter_flush_s (and on
        # flush), not once per call: a gateway may call ingest hundreds of times
        # a second, and each write is a round trip.
        self.counter_flush_s = counter_flush_s
        self._unsent_counts = {"ingested": 0, "accepted": 0, "pushed_back": 0}
        self._counts_sent_ts = float("-inf")

    def ingest(self, readings: Iterable[Mapping[str, object] | bytes | str]) -> IngestResult:
        """Single readings, each a dict or JSON bytes/str."""
        now = self.clock()
        ids: list[int] = []
        tss: list[float] = []
        vals: list[tuple[float, ...]] = []
        parsed_from: list[int] = []
        letters: list[DeadLetter] = []
        for i, raw in enumerate(readings):
            try:
                d, t, v = parse_reading(raw, self.limits, now)
            except InvalidReading as exc:
                letters.append(DeadLetter(exc.reason, exc.detail, _raw_bytes(raw), "ingest", now))
                continue
            ids.append(d)
            tss.append(t)
            vals.append(v)
            parsed_from.append(i)
        m = len(self.limits.metrics)
        result = self.ingest_columns(
            np.asarray(ids, dtype=np.uint64),
            np.asarray(tss, dtype=np.float64),
            np.asarray(vals, dtype=np.float64).reshape(len(ids), m),
            now_ts=now,
            extra_letters=letters,
        )
        if result.pushed_back:
            back = np.asarray(parsed_from, dtype=np.intp)[result.pushed_back_index]
            result = replace(result, pushed_back_index=back)
        return result

    def ingest_columns(
        self,
        device_id: npt.ArrayLike,
        ts: npt.ArrayLike,
        values: npt.ArrayLike,
        now_ts: float | None = None,
        extra_letters: list[DeadLetter] | None = None,
        offered_ts: npt.ArrayLike | None = None,
    ) -> IngestResult:
        """Columnar readings: ids (n,), event times (n,), values (n, metrics).

        ``offered_ts`` (n,): when each reading was first offered, for readings offered
        again after a push-back or offered late by a paced source; latency runs from it
        (never later than now). Default: now."""
        now = self.clock() if now_ts is None else now_ts
        letters = extra_letters or []
        dev = np.asarray(device_id, dtype=np.uint64)
        t = np.asarray(ts, dtype=np.float64)
        v = np.asarray(values, dtype=np.float64)
        if v.ndim == 1 and len(self.limits.metrics) == 1:
            v = v[:, None]
        reg = self._registry()
        rows = reg.lookup(dev)
        reason = check_columns(t, v, rows >= 0, self.limits, now)
        ok = reason == 0
        if not ok.all():
            for i in np.flatnonzero(~ok):
                payload = {"device_id": int(dev[i]), "ts": float(t[i])}
                if v.ndim == 2 and v.shape[0] == len(dev):
                    payload.update(zip(self.limits.metrics, map(float, v[i]), strict=False))
                code = REASONS[reason[i]]
                letters.append(DeadLetter(code, "", json.dumps(payload).encode(), "ingest", now))
        take = np.flatnonzero(ok)
        pushed_back = pushed_region = _NONE
        if take.size:
            region = self.placer(reg, rows[take])
            tier = reg.tier[rows[take]]
            if self.backlog_gate is not None:
                held = self.backlog_gate()[region] & (tier > 0)
                if held.any():
                    pushed_back = take[held]
                    pushed_region = region[held].astype(np.intp)
                    take, region, tier = take[~held], region[~held], tier[~held]
            if offered_ts is None:
                first = np.full(take.size, now)
            else:
                first = np.minimum(np.asarray(offered_ts, dtype=np.float64)[take], now)
            full = self.batcher.add(region, tier, dev[take], t[take], v[take], first)
            premium = reg.topology.tiers[0]
            due_at = now
            if any(b.tier != premium for b in full):
                # Sending other tiers' full batches takes longer than premium's age limit
                # under load: premium waiting in the batcher goes out first, whatever its age.
                due_at = now + self.batcher.config.age_limit_s(premium)
            self._publish(self.batcher.due(due_at))
            self._publish(full)
        accepted = int(take.size)
        self._unsent_counts["ingested"] += accepted + len(letters)
        self._unsent_counts["accepted"] += accepted
        self._unsent_counts["pushed_back"] += int(pushed_back.size)
        if letters:
            self.store.add_dead_letters(letters)
        reasons: dict[str, int] = {}
        for dl in letters:
            reasons[dl.reason] = reasons.get(dl.reason, 0) + 1
        # Age limits are checked on the clock after the work above, not at the call's start:
        # a large call takes long enough that premium batches it started are already due.
        self.poll(max(now, self.clock()))
        return IngestResult(accepted, len(letters), reasons, pushed_back, pushed_region)

    def closed(self) -> npt.NDArray[np.bool_] | None:
        """Per region code, True where non-premium readings are pushed back now; None
        without a backlog gate."""
        return None if self.backlog_gate is None else self.backlog_gate()

    def poll(self, now_ts: float | None = None) -> int:
        """Publish batches that reached their age limit; returns how many."""
        now = self.clock() if now_ts is None else now_ts
        due = self.batcher.due(now)
        self._publish(due)
        poll = getattr(self.publisher, "poll", None)
        if poll is not None:
            poll(now)
        if now - self._counts_sent_ts >= self.counter_flush_s:
            self._send_counts(now)
        return len(due)

    def flush(self) -> int:
        """Publish everything buffered (shutdown, end of a run)."""
        rest = self.batcher.drain()
        self._publish(rest)
        flush = getattr(self.publisher, "flush", None)
        if flush is not None:
            flush()
        self._send_counts(self.clock())
        return len(rest)

    def _send_counts(self, now: float) -> None:
        self._counts_sent_ts = now
        if any(self._unsent_counts.values()):
            self.store.incr_counters(self._unsent_counts)
            self._unsent_counts = dict.fromkeys(self._unsent_counts, 0)

    def _publish(self, batches: list[Batch]) -> None:
        if not batches:
            return
        publish_many = getattr(self.publisher, "publish_many", None)
        if publish_many is not None:
            publish_many(batches)
        else:
            for b in batches:
                self.publisher.publish(b)
        self.published_batches += len(batches)
        self.published_readings += sum(len(b) for b in batches)


def _raw_bytes(raw: object) -> bytes:
    if isinstance(raw, bytes):
        return raw
    if isinstance(raw, str):
        return raw.encode()
    try:
        return json.dumps(raw).encode()
    except (TypeError, ValueError):
        return repr(raw).encode()
