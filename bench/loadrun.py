"""Drive a producer with a synthetic stream, wait until everything is processed, summarise.

Shared by the demo and the benchmark, so both report the same figures the
same way: counts from the store's counters, latency from its histograms, and
loss and duplication checked against the rollups themselves.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from bench.held_readings import PUSHED_BACK_WAIT_S, HeldReadings
from ingest.producer import Producer
from ingest.synthetic import SyntheticStream
from scheduler.latency import percentile_ms
from stores.protocols import StateStore, processed_readings

#: A gateway hands what it holds to screening (a chunk at a time) until this long after
#: its loop began, then offers held readings again and goes back to new ones. Premium
#: arriving meanwhile waits for the rest of the loop, so this bounds premium's wait in the
#: gateway; one chunk a loop instead let held readings wait seconds for screening while
#: the gateway was behind its schedule (at 2x capacity on 2 cores, `gateway_wait_ms`
#: p50 6,148.68 ms, standard detection p99 9,084.39 ms; with 0.1 s 3,423.81 and
#: 5,855.88 ms, premium p99 257.92 ms). At 0.2 s the loop outgrew the schedule's step
#: (ten chunks while behind) and the gateway fell a second behind (premium p99 1,422.66 ms).
HANDOVER_BUDGET_S = 0.1
#: ... but only one chunk a loop while the gateway is this far behind its schedule
#: (seconds): premium arriving meanwhile waits for the loop, and its bound is 500 ms. In a
#: fleet_spike past 3x capacity with 1,000,000 devices the gateway's loop could not keep
#: up with its schedule and premium waited in it (premium p99 563.0-591.15 ms, 441.12-
#: 463.18 of them before publishing; 486.34-510.65 with this rule). Handing over less
#: while behind, the held readings wait longer for screening and premium does not; in
#: sustained runs at 1.7-1.9x capacity (1,300,000/s, 20,000 devices) the gateway was
#: rarely that far behind, and standard detection p99 was 1,170.43-2,554.9 ms.
HANDOVER_MAX_LAG_S = 0.15

Progress = Callable[[str], None]


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
    #: Histogram (ms) of how long held readings waited at the gateway, from their event
    #: time, before it handed them to screening (``HeldReadings.handover_wait_ms``).
    handover_wait_ms: dict[int, int] = field(default_factory=dict)

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
    gateway = _Gateway(producer, stream, readings, chunk, pace, extra)
    last_report = gateway.started
    while gateway.offered < readings or gateway.held:
        now = time.time()
        timed_out = hold_timeout_s is not None and now - gateway.offered_until > hold_timeout_s
        if gateway.offered >= readings and timed_out:
            break  # no region took them back in time (no worker draining?)
        loop_began = time.perf_counter()
        waiting, n = gateway.offer_new(now)
        # Held readings are offered again only after the new ones: new readings carry
        # premium, held ones never do, and a re-offer (up to a chunk of other tiers'
        # batches to publish) must not hold up premium arriving meanwhile.
        budget_s = HANDOVER_BUDGET_S if gateway.lag_s(time.time()) < HANDOVER_MAX_LAG_S else 0.0
        again = gateway.offer_held(time.time(), loop_began + budget_s)
        if progress and now - last_report >= 1.0:
            last_report = now
            gateway.report(progress, now, n, waiting)
        if n or again:
            continue
        producer.poll(time.time())
        # Nothing to offer yet: wake for the next batch falling due (premium's 25 ms age)
        # if that is sooner than the next re-offer, or the pace's next step.
        wake = now + (PUSHED_BACK_WAIT_S if waiting else 0.002)
        next_due = producer.next_due_ts(time.time())
        if next_due is not None:
            wake = min(wake, next_due)
        time.sleep(max(0.0, wake - time.time()))
    producer.flush()
    if progress:
        # The last figure too, so the progress never stops short of the total.
        elapsed = max(time.time() - gateway.started, 1e-9)
        progress(
            f"offered {gateway.offered:,}/{readings:,} ({gateway.offered / elapsed:,.0f} r/s), done"
        )
    return gateway.result()


class _Gateway:
    """What ``drive`` offers and what came of it: a gateway in front of its devices."""

    def __init__(
        self,
        producer: Producer,
        stream: SyntheticStream,
        readings: int,
        chunk: int,
        pace: Pace | None,
        extra: Callable[[float], list[Any]] | None,
    ) -> None:
        self.producer, self.stream, self.readings = producer, stream, readings
        self.chunk, self.pace, self.extra = chunk, pace, extra
        self.started = time.time()
        self.offered = self.accepted = self.rejected = 0
        self.offered_until = self.started
        self.held = HeldReadings(10 * chunk, chunk, screen=producer.screen_held)

    def due(self, now: float) -> tuple[bool, int, bool]:
        """(waiting, readings to offer now, behind the schedule by more than a chunk)."""
        readings, chunk, pace = self.readings, self.chunk, self.pace
        # Backpressure: an unpaced source waits while the gateway's buffer is full (or all
        # is offered). A paced source does not: devices keep sending, so new readings keep
        # flowing (premium is never pushed back) and the gateway holds what is handed
        # back, however much.
        waiting = self.offered >= readings or (self.held.full and pace is None)
        if waiting:
            return True, 0, False
        if pace is None:
            return False, min(chunk, readings - self.offered), False
        # Offer at least 5 ms of readings at a time, as a gateway would, so
        # pacing does not turn into one tiny ingest call per loop.
        elapsed = now - self.started
        step = min(
            chunk, max(1, int(pace(elapsed + 0.005) - pace(elapsed))), readings - self.offered
        )
        allowed = int(pace(elapsed)) - self.offered
        if allowed < step:
            return False, 0, False
        # Behind the schedule by more than a chunk, the gateway takes everything due
        # (up to a buffer's worth) and lets premium through first (below).
        behind = allowed > chunk
        return False, min(10 * chunk if behind else chunk, allowed, readings - self.offered), behind

    def lag_s(self, now: float) -> float:
        """How long ago the next reading to offer was due (0.0 unpaced, or all offered)."""
        if self.pace is None or self.offered >= self.readings:
            return 0.0
        due = self.started + float(self.pace.offer_instants(self.offered, 1)[0])
        return max(0.0, now - due)

    def offer_new(self, now: float) -> tuple[bool, int]:
        """Offer the readings due now; (waiting, readings offered)."""
        waiting, n, behind = self.due(now)
        if not n:
            return waiting, 0
        ids, ts, values = self.stream.chunk(n, now)
        first = np.full(n, now)
        if self.pace is not None:
            first = np.minimum(self.started + self.pace.offer_instants(self.offered, n), now)
        self.offered += n
        self.offered_until = now
        if behind:
            # A gateway that has fallen behind its devices serves premium first: the
            # other tiers' readings wait in its buffer (their first-offer time kept) and
            # are offered as their regions take them, like pushed-back ones.
            ids, ts, values, first = self.held.defer_non_premium(
                self.stream.registry, ids, ts, values, first
            )
        else:
            ids, ts, values, first = self.held.queue_behind_held(
                self.stream.registry, ids, ts, values, first
            )
        res = self.producer.ingest_columns(ids, ts, values, now_ts=now, offered_ts=first)
        self.accepted += res.accepted
        self.rejected += res.rejected
        self.held.hold(res, ids, ts, values, first, now)
        if self.extra is not None:
            # Counted in ``readings`` like the rest: a run that overran its schedule (a loaded
            # machine) must not offer a second second's singles past the total asked for.
            singles = self.extra(now)[: max(0, self.readings - self.offered)]
            if singles:
                self.offered += len(singles)
                a, r = offer_singles(self.producer, singles)
                self.accepted, self.rejected = self.accepted + a, self.rejected + r
        return waiting, n

    def offer_held(self, now: float, handover_until: float | None = None) -> bool:
        """Screen what was held since (a chunk, and more until ``handover_until`` on the
        ``time.perf_counter`` clock), then offer held readings again; whether any were
        screened, taken or rejected."""
        screened = step = self.held.screen_waiting(now)
        while step and handover_until is not None and time.perf_counter() < handover_until:
            step = self.held.screen_waiting(now)
            screened += step
        a, r = self.held.offer_again(self.producer, now)
        self.accepted, self.rejected = self.accepted + a, self.rejected + r
        return bool(screened or a or r)

    def report(self, progress: Progress, now: float, n: int, waiting: bool) -> None:
        if n:
            rate = self.offered / (now - self.started)
            progress(f"offered {self.offered:,}/{self.readings:,} ({rate:,.0f} r/s)")
        elif waiting:
            progress(f"backpressure: {self.held.size:,} readings held, offering again")

    def result(self) -> DriveResult:
        held = self.held
        return DriveResult(
            self.offered,
            self.accepted,
            self.rejected,
            self.started,
            time.time(),
            held.pushed_back,
            held.pushed_back_readings,
            self.offered_until,
            held.deferred,
            held.size,
            held.handover_wait_ms,
        )


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
    latency = stage_percentiles(store, "ingest", tiers)
    event_latency = stage_percentiles(store, "event", tiers)
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
        # Readings screened at once while admission control held them back.
        "screened_while_held": c.get("screened_while_held", 0),
        # Mean readings per routine task (chunk) applied: each task has a fixed cost.
        "readings_per_routine_task": {
            tier: round(c.get(f"processed:{tier}", 0) / c[f"batches:{tier}"], 1)
            for tier in tiers
            if c.get(f"batches:{tier}")
        },
    }


def stage_percentiles(
    store: StateStore, stage: str, tiers: Sequence[str]
) -> dict[str, dict[str, float | None]]:
    """p50 and p99 (ms) of one latency stage's histogram, per tier (None: no reading)."""
    out: dict[str, dict[str, float | None]] = {}
    for tier in tiers:
        h = store.latency_histogram(stage, tier)
        out[tier] = {"p50": _r(percentile_ms(h, 50)), "p99": _r(percentile_ms(h, 99))}
    return out


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 2)
