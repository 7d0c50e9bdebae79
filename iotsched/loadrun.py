"""Drive a producer with a synthetic stream, wait until everything is processed, summarise.

Shared by the demo and the benchmark, so both report the same figures the
same way: counts from the store's counters, latency from its histograms, and
loss and duplication checked against the rollups themselves.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ingest.producer import Producer
from ingest.synthetic import SyntheticStream
from scheduler.latency import percentile_ms
from stores.protocols import StateStore

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


def drive(
    producer: Producer,
    stream: SyntheticStream,
    readings: int,
    rate_rps: float | None = None,
    chunk: int = 10_000,
    extra: Callable[[float], list[Any]] | None = None,
    progress: Progress | None = None,
) -> DriveResult:
    """Offer ``readings`` columnar readings, paced at ``rate_rps`` (None = as fast as possible).

    ``extra(now)`` may return single readings (dicts or JSON bytes) to ingest
    alongside, e.g. malformed ones to exercise the dead-letter path.
    """
    started = time.time()
    offered = accepted = rejected = 0
    last_report = started
    while offered < readings:
        now = time.time()
        if rate_rps:
            # Offer at least 5 ms of readings at a time, as a gateway would, so
            # pacing does not turn into one tiny ingest call per loop.
            step = min(chunk, max(1, int(rate_rps * 0.005)), readings - offered)
            allowed = int((now - started) * rate_rps) - offered
            if allowed < step:
                producer.poll(now)
                wake = started + (offered + step) / rate_rps
                next_due = producer.batcher.next_due_ts()
                if next_due is not None:
                    wake = min(wake, next_due)
                time.sleep(max(0.0, min(wake - time.time(), 0.01)))
                continue
            n = min(chunk, allowed, readings - offered)
        else:
            n = min(chunk, readings - offered)
        ids, ts, values = stream.chunk(n, now)
        res = producer.ingest_columns(ids, ts, values, now_ts=now)
        offered += n
        accepted += res.accepted
        rejected += res.rejected
        if extra is not None:
            singles = extra(now)
            if singles:
                res = producer.ingest(singles)
                offered += len(singles)
                accepted += res.accepted
                rejected += res.rejected
        if progress and now - last_report >= 1.0:
            last_report = now
            progress(f"offered {offered:,}/{readings:,} ({offered / (now - started):,.0f} r/s)")
    producer.flush()
    return DriveResult(offered, accepted, rejected, started, time.time())


def processed_count(counters: dict[str, int]) -> int:
    return sum(v for k, v in counters.items() if k.startswith("processed:"))


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
        processed = processed_count(c)
        ingested = c.get("ingested", 0)
        now = time.time()
        if processed + c.get("dead_lettered", 0) >= ingested:
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
    processed_counter = processed_count(c)
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
