"""Drive a producer with a synthetic stream, wait until everything is processed, summarise.

Shared by the demo and the benchmark, so both report the same figures the
same way: counts from the store's counters, latency from its histograms, and
loss and duplication checked against the rollups themselves.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from ingest.producer import IngestResult, Producer
from ingest.synthetic import SyntheticStream
from scheduler.latency import percentile_ms
from scheduler.registry import Registry
from stores.protocols import StateStore, processed_readings

Progress = Callable[[str], None]

#: How long a producer waits before offering pushed-back readings again; doubled while
#: nothing is taken, up to the longest wait (about the gate's own refresh), so a closed
#: region costs the producer a re-offer every 0.2 s, not a busy loop.
PUSHED_BACK_WAIT_S = 0.05
PUSHED_BACK_MAX_WAIT_S = 0.2


def stderr_progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass
class DriveResult:
    offered: int
    accepted: int
    rejected: int
    started_ts: float
    finished_ts: float
    #: Readings handed back by backpressure, each time (the producer's ``pushed_back``
    #: counter), all offered again until taken.
    pushed_back: int = 0
    #: Distinct readings handed back at least once.
    pushed_back_readings: int = 0
    #: When the last new reading was offered (the run goes on while held ones are taken).
    offered_until_ts: float = 0.0
    #: Readings the gateway held itself, premium first, while behind its schedule.
    deferred: int = 0
    #: Readings still held (never admitted) when ``hold_timeout_s`` ran out: not accepted.
    unadmitted: int = 0

    @property
    def offered_rps(self) -> float:
        """Readings offered per second while the source was offering."""
        return self.offered / max(self.offered_until_ts - self.started_ts, 1e-9)

    @property
    def admitted_rps(self) -> float:
        """Readings taken by ingest per second, until the last was taken."""
        return self.accepted / max(self.finished_ts - self.started_ts, 1e-9)


class Pace(Protocol):
    """A load schedule: how many readings should have been offered ``elapsed_s`` in."""

    def __call__(self, elapsed_s: float) -> float: ...

    def offer_instants(self, first: int, n: int) -> npt.NDArray[np.float64]:
        """Seconds from the start at which readings ``first .. first+n-1`` are due."""
        ...


@dataclass(frozen=True)
class SteadyPace:
    rate_rps: float

    def __call__(self, elapsed_s: float) -> float:
        return elapsed_s * self.rate_rps

    def offer_instants(self, first: int, n: int) -> npt.NDArray[np.float64]:
        return (first + np.arange(n, dtype=np.float64)) / self.rate_rps


def drive(
    producer: Producer,
    stream: SyntheticStream,
    readings: int,
    rate_rps: float | None = None,
    chunk: int = 10_000,
    extra: Callable[[float], list[Any]] | None = None,
    progress: Progress | None = None,
    pace: Pace | None = None,
    hold_timeout_s: float | None = None,
) -> DriveResult:
    """Offer ``readings`` columnar readings, paced at ``rate_rps`` (None = as fast as possible)
    or by ``pace(elapsed_s)``: how many readings should have been offered by then.

    Latency starts when a reading is first offered: paced, at the instant the schedule
    offered it even if the producer fell behind (no coordinated omission); pushed back,
    at its first offer, however often it is offered again.

    ``extra(now)`` may return single readings (dicts or JSON bytes) to ingest
    alongside, e.g. malformed ones to exercise the dead-letter path.

    Once everything is offered, readings still pushed back are offered again for at most
    ``hold_timeout_s`` (None: until taken); what is left then is reported as ``unadmitted``.
    """
    if pace is None and rate_rps:
        pace = SteadyPace(rate_rps)

    started = time.time()
    offered = accepted = rejected = 0
    offered_until = started
    held = HeldReadings(max_readings=10 * chunk, offer_readings=chunk)
    last_report = started
    while offered < readings or held:
        now = time.time()
        timed_out = hold_timeout_s is not None and now - offered_until > hold_timeout_s
        if offered >= readings and timed_out:
            break  # no region took them back in time (no worker draining?)
        n = 0
        behind = False
        # Backpressure: an unpaced source waits while the gateway's buffer is full (or all
        # is offered). A paced source does not: devices keep sending, so new readings keep
        # flowing (premium is never pushed back) and the gateway holds what is handed
        # back, however much.
        waiting = offered >= readings or (held.full and pace is None)
        if not waiting and pace is not None:
            # Offer at least 5 ms of readings at a time, as a gateway would, so
            # pacing does not turn into one tiny ingest call per loop.
            elapsed = now - started
            step = min(
                chunk, max(1, int(pace(elapsed + 0.005) - pace(elapsed))), readings - offered
            )
            allowed = int(pace(elapsed)) - offered
            if allowed >= step:
                # Behind the schedule by more than a chunk, the gateway takes everything due
                # (up to a buffer's worth) and lets premium through first (below).
                behind = allowed > chunk
                n = min(10 * chunk if behind else chunk, allowed, readings - offered)
        elif not waiting:
            n = min(chunk, readings - offered)
        if n:
            ids, ts, values = stream.chunk(n, now)
            first = np.full(n, now)
            if pace is not None:
                first = np.minimum(started + pace.offer_instants(offered, n), now)
            offered += n
            offered_until = now
            if behind:
                # A gateway that has fallen behind its devices serves premium first: the
                # other tiers' readings wait in its buffer (their first-offer time kept) and
                # are offered as their regions take them, like pushed-back ones.
                ids, ts, values, first = held.defer_non_premium(
                    stream.registry, ids, ts, values, first
                )
            res = producer.ingest_columns(ids, ts, values, now_ts=now, offered_ts=first)
            accepted += res.accepted
            rejected += res.rejected
            held.hold(res, ids, ts, values, first, now)
            if extra is not None:
                singles = extra(now)
                if singles:
                    offered += len(singles)
                    a, r = offer_singles(producer, singles)
                    accepted, rejected = accepted + a, rejected + r
        # Held readings are offered again only after the new ones: new readings carry
        # premium, held ones never do, and a re-offer (up to a chunk of other tiers'
        # batches to publish) must not hold up premium arriving meanwhile.
        a, r = held.offer_again(producer, time.time())
        accepted, rejected = accepted + a, rejected + r
        if progress and now - last_report >= 1.0:
            last_report = now
            if n:
                progress(f"offered {offered:,}/{readings:,} ({offered / (now - started):,.0f} r/s)")
            elif waiting:
                progress(f"backpressure: {held.size:,} readings held, offering again")
        if n or a or r:
            continue
        producer.poll(time.time())
        # Nothing to offer yet: wake for the next batch falling due (premium's 25 ms age)
        # if that is sooner than the next re-offer, or the pace's next step.
        wake = now + (PUSHED_BACK_WAIT_S if waiting else 0.002)
        next_due = producer.batcher.next_due_ts()
        if next_due is not None:
            wake = min(wake, next_due)
        time.sleep(max(0.0, wake - time.time()))
    producer.flush()
    if progress:
        # The last figure too, so the progress never stops short of the total.
        elapsed = max(time.time() - started, 1e-9)
        progress(f"offered {offered:,}/{readings:,} ({offered / elapsed:,.0f} r/s), done")
    return DriveResult(
        offered,
        accepted,
        rejected,
        started,
        time.time(),
        held.pushed_back,
        held.pushed_back_readings,
        offered_until,
        held.deferred,
        held.size,
    )


class HeldReadings:
    """Readings handed back by backpressure, held by the gateway and offered again.

    New readings keep flowing (premium is never pushed back) until the buffer
    holds ``max_readings``; then the gateway waits.

    Held per region, oldest first, as the column pieces they arrived in: holding more
    and offering some again costs in proportion to what moves, not to what is held (a
    spike can leave millions waiting, and copying them all on every re-offer would stall
    the gateway, and premium behind it).
    """

    def __init__(self, max_readings: int, offer_readings: int | None = None) -> None:
        """``offer_readings``: the most offered again at once (a gateway chunk), so one
        call never holds up the premium batches the producer has waiting."""
        self.max_readings = max_readings
        self.offer_readings = offer_readings or max_readings
        #: Hand-backs, each time; and distinct readings handed back at least once.
        self.pushed_back = 0
        self.pushed_back_readings = 0
        #: Readings the gateway held itself while behind its schedule (premium first).
        self.deferred = 0
        self._wait_s = PUSHED_BACK_WAIT_S
        #: Per region code, pieces of (device ids, event times, values, first-offer times).
        self._held: dict[int, deque[tuple[npt.NDArray[Any], ...]]] = {}
        self._size = 0
        self._retry_at = 0.0

    @property
    def size(self) -> int:
        return self._size

    @property
    def full(self) -> bool:
        return self.size >= self.max_readings

    def __bool__(self) -> bool:
        return self.size > 0

    def hold(
        self,
        res: IngestResult,
        ids: npt.NDArray[Any],
        ts: npt.NDArray[Any],
        values: npt.NDArray[Any],
        offered_ts: npt.NDArray[Any],
        now: float,
    ) -> None:
        if not res.pushed_back:
            return
        self.pushed_back += res.pushed_back
        self.pushed_back_readings += res.pushed_back
        i = res.pushed_back_index
        if not self._size:
            self._retry_at = now + self._wait_s
        self._add((ids[i], ts[i], values[i], offered_ts[i]), res.pushed_back_region)

    def defer_non_premium(
        self,
        registry: Registry,
        ids: npt.NDArray[Any],
        ts: npt.NDArray[Any],
        values: npt.NDArray[Any],
        offered_ts: npt.NDArray[Any],
    ) -> tuple[npt.NDArray[Any], ...]:
        """Hold the readings of every tier but premium (bound for their home region);
        returns the premium ones (and unknown devices, for ingest to dead-letter)."""
        rows = registry.lookup(ids)
        known = rows >= 0
        later = known & (registry.tier[np.maximum(rows, 0)] > 0)
        if later.any():
            region = registry.home_region[rows[later]].astype(np.intp)
            self._add((ids[later], ts[later], values[later], offered_ts[later]), region)
            self.deferred += int(later.sum())
        now = ~later
        return ids[now], ts[now], values[now], offered_ts[now]

    def _add(
        self,
        cols: tuple[npt.NDArray[Any], ...],
        region: npt.NDArray[np.intp],
        front: bool = False,
    ) -> None:
        """Hold ``cols`` behind what each region holds (``front``: ahead of it, for
        readings offered again and handed back, which are older than the rest)."""
        codes = np.unique(region)
        for code in codes.tolist():
            piece = cols if codes.size == 1 else tuple(c[region == code] for c in cols)
            fifo = self._held.setdefault(code, deque())
            if front:
                fifo.appendleft(piece)
            else:
                fifo.append(piece)
        self._size += int(region.size)

    def _take(self, code: int, n: int) -> list[tuple[npt.NDArray[Any], ...]]:
        """Up to ``n`` of the oldest readings held for a region, in order."""
        fifo = self._held[code]
        taken: list[tuple[npt.NDArray[Any], ...]] = []
        while n > 0 and fifo:
            piece = fifo.popleft()
            size = int(piece[0].shape[0])
            if size > n:
                fifo.appendleft(tuple(c[n:] for c in piece))
                piece = tuple(c[:n] for c in piece)
                size = n
            taken.append(piece)
            n -= size
            self._size -= size
        if not fifo:
            del self._held[code]
        return taken

    def offer_again(self, producer: Producer, now: float) -> tuple[int, int]:
        """Offer again the oldest readings held for regions open now, at most
        ``offer_readings`` split evenly between them; readings of regions still closed
        are not offered at all."""
        if not self._size or now < self._retry_at:
            return 0, 0
        closed = producer.closed()
        ready = [c for c in self._held if closed is None or not closed[c]]
        if not ready:
            self._wait_s = min(2 * max(self._wait_s, PUSHED_BACK_WAIT_S), PUSHED_BACK_MAX_WAIT_S)
            self._retry_at = now + self._wait_s
            return 0, 0
        # Split evenly: region i of k gets (offer_readings + i) // k, together the whole budget.
        k = len(ready)
        pieces = [
            p
            for i, code in enumerate(ready)
            for p in self._take(code, (self.offer_readings + i) // k)
        ]
        if not pieces:  # a budget smaller than the open regions: the first gets one
            pieces = self._take(ready[0], 1)
        ids, ts, values, offered_ts = (
            np.concatenate([p[k] for p in pieces]) for k in range(len(pieces[0]))
        )
        res = producer.ingest_columns(ids, ts, values, now_ts=now, offered_ts=offered_ts)
        if not res.pushed_back:
            self._wait_s = 0.0  # all taken: carry on with the next chunk held at once
        elif res.accepted:
            self._wait_s = PUSHED_BACK_WAIT_S
        else:
            self._wait_s = min(2 * max(self._wait_s, PUSHED_BACK_WAIT_S), PUSHED_BACK_MAX_WAIT_S)
        self.pushed_back += res.pushed_back
        if res.pushed_back:
            i = res.pushed_back_index
            back = (ids[i], ts[i], values[i], offered_ts[i])
            self._add(back, res.pushed_back_region, front=True)
        self._retry_at = now + self._wait_s
        return res.accepted, res.rejected


def offer_columns(
    producer: Producer,
    ids: npt.NDArray[Any],
    ts: npt.NDArray[Any],
    values: npt.NDArray[Any],
) -> tuple[int, int]:
    """Ingest columnar readings, offering pushed-back ones again until all are taken;
    latency runs from the first offer. (accepted, rejected)."""
    offered_ts = np.full(len(ids), time.time())
    accepted = rejected = 0
    while len(ids):
        res = producer.ingest_columns(ids, ts, values, offered_ts=offered_ts)
        accepted, rejected = accepted + res.accepted, rejected + res.rejected
        i = res.pushed_back_index
        ids, ts, values, offered_ts = ids[i], ts[i], values[i], offered_ts[i]
        if len(ids):
            producer.poll()
            time.sleep(PUSHED_BACK_WAIT_S)
    return accepted, rejected


def offer_singles(producer: Producer, readings: list[Any]) -> tuple[int, int]:
    """Ingest single readings, waiting out backpressure; (accepted, rejected)."""
    accepted = rejected = 0
    while readings:
        res = producer.ingest(readings)
        accepted, rejected = accepted + res.accepted, rejected + res.rejected
        readings = [readings[i] for i in res.pushed_back_index]
        if readings:
            time.sleep(PUSHED_BACK_WAIT_S)
    return accepted, rejected


def wait_drained(
    store: StateStore,
    timeout_s: float,
    progress: Progress | None = None,
) -> tuple[bool, float]:
    """Wait until every ingested reading is processed or dead-lettered; (drained, at_ts)."""
    deadline = time.time() + timeout_s
    last_report = 0.0
    while True:
        c = store.counters()
        processed = processed_readings(c)
        ingested = c.get("ingested", 0)
        now = time.time()
        if processed + c.get("dead_lettered", 0) >= ingested:
            if progress:
                dead = c.get("dead_lettered", 0)
                progress(f"processed {processed:,}/{ingested:,} (+{dead:,} dead-lettered), done")
            return True, now
        if now >= deadline:
            return False, now
        if progress and now - last_report >= 1.0:
            last_report = now
            progress(f"processed {processed:,}/{ingested:,}")
        time.sleep(0.005)


def summarize(
    store: StateStore,
    tiers: tuple[str, ...],
    drive_result: DriveResult,
    done_ts: float,
    verify: bool = True,
) -> dict[str, Any]:
    """The figures both the demo and the benchmark print.

    ``processed`` is read back from the rollups themselves (when ``verify``),
    independently of the counters, so a lost or doubly applied batch shows.
    """
    c = store.counters()
    processed_counter = processed_readings(c)
    processed = store.rollup_count_total() if verify else processed_counter
    ingested = c.get("ingested", 0)
    dead_lettered = c.get("dead_lettered", 0)
    seconds = max(done_ts - drive_result.started_ts, 1e-9)
    latency: dict[str, dict[str, float | None]] = {}
    event_latency: dict[str, dict[str, float | None]] = {}
    for tier in tiers:
        h = store.latency_histogram("ingest", tier)
        latency[tier] = {"p50": _r(percentile_ms(h, 50)), "p99": _r(percentile_ms(h, 99))}
        e = store.latency_histogram("event", tier)
        event_latency[tier] = {"p50": _r(percentile_ms(e, 50)), "p99": _r(percentile_ms(e, 99))}
    return {
        "readings": ingested,
        "accepted": c.get("accepted", 0),
        "seconds": round(seconds, 3),
        "throughput_rps": round(ingested / seconds, 1),
        "latency_ms": latency,
        "event_latency_ms": event_latency,
        "processed": processed,
        "dead_lettered": dead_lettered,
        "lost": max(0, ingested - processed - dead_lettered),
        "duplicated": max(0, processed - (ingested - dead_lettered)),
        "duplicate_deliveries_skipped": c.get("duplicate_deliveries", 0),
    }


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 2)
