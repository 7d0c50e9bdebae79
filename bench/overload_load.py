"""The load the overload bench offers: premium through the producer, standard as ready
batches from a thread of its own, and the calibration that sizes it."""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any

import numpy as np
import numpy.typing as npt

from bench.redis_run import RedisRun
from bench.sending import bench_publisher, send_batches
from ingest.producer import Producer
from scheduler.latency import counts_since, percentile_ms
from scheduler.model import Batch, queue_name
from scheduler.registry import Registry
from stores.protocols import processed_readings
from stores.redis_state import RedisStateStore


class TierFeed:
    """Readings of one tier from devices homed in one region: a steady signal plus noise."""

    def __init__(self, registry: Registry, region_code: int, tier_code: int, seed: int) -> None:
        mask = (registry.home_region == region_code) & (registry.tier == tier_code)
        self.ids = registry.device_id[mask]
        if self.ids.size == 0:
            raise SystemExit("overload-bench: no device of a tier in the region; raise --devices")
        self.rng = np.random.default_rng(seed)

    def chunk(
        self, n: int, now_ts: float
    ) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        ids = self.ids[self.rng.integers(0, self.ids.size, size=n)]
        ts = now_ts - self.rng.uniform(0.0, 0.01, size=n)
        return ids, ts, 20.0 + self.rng.normal(0.0, 0.5, size=(n, 1))


class BatchFeed:
    """Standard load as ready micro-batches, stamped with fresh times when sent.

    One producer process cannot offer several times what the region's workers
    process, so the overload is published as batches built beforehand; the
    readings are counted as ingested when sent, and their latency runs from
    the moment they are sent.
    """

    def __init__(
        self, run_: RedisRun, feed: TierFeed, region: str, batch_readings: int, screening: bool
    ) -> None:
        self.publisher = bench_publisher(run_.app, screening=screening)
        self.store = run_.store
        self.region = region
        self.n = batch_readings
        self.templates = [
            long_batch(feed, region, "standard", batch_readings, f"t{i}") for i in range(8)
        ]
        self.sent_batches = 0

    def send(self, count: int) -> int:
        """Publish ``count`` batches now; returns the readings sent."""
        stamp = np.full(self.n, time.time())
        batches = []
        for _ in range(count):
            template = self.templates[self.sent_batches % len(self.templates)]
            batches.append(
                dataclasses.replace(
                    template, batch_id=f"std-{self.sent_batches}", ts=stamp, ingest_ts=stamp
                )
            )
            self.sent_batches += 1
        readings = send_batches(self.publisher, batches)
        self.store.incr_counters({"ingested": readings, "accepted": readings})
        return readings


def offer(
    producer: Producer,
    premium: TierFeed,
    premium_rps: float,
    standard: BatchFeed,
    standard_rps: float,
    seconds: float,
) -> tuple[dict[str, int], float]:
    """Premium readings through the producer and standard batches, each at its rate.

    Standard batches go out from a thread of their own, so publishing them
    never holds up the producer's age-based flush of premium batches. That
    thread sends ``seconds`` × ``standard_rps`` readings in all, catching up
    past ``seconds`` if it fell behind; returns the readings sent per tier and
    how long the standard sending took, so the offered rate reported is the
    one achieved, not the one asked for.
    """
    start = time.time()
    sent = {"premium": 0, "standard": 0}
    # The feed's batch count includes calibration's batches: count from here, or
    # the first few seconds' worth of this phase would be taken as already sent.
    base_batches = standard.sent_batches
    total_batches = round(seconds * standard_rps / standard.n)
    standard_s = seconds

    def blast() -> None:
        nonlocal standard_s
        # A publisher slower than the rate asked for stops at twice the phase length.
        while (now := time.time()) - start < 2 * seconds:
            sent_here = standard.sent_batches - base_batches
            if sent_here >= total_batches:
                break
            due = min(int((now - start) * standard_rps / standard.n), total_batches) - sent_here
            if due > 0:
                sent["standard"] += standard.send(min(due, 20))
            else:
                time.sleep(0.001)
        standard_s = max(seconds, time.time() - start)

    blaster = threading.Thread(target=blast, name="standard-load")
    blaster.start()
    while (now := time.time()) - start < seconds:
        due = int((now - start) * premium_rps) - sent["premium"]
        if due > 0:
            producer.ingest_columns(*premium.chunk(due, now), now_ts=now)
            sent["premium"] += due
        producer.poll(now)
        time.sleep(0.001)
    producer.flush()
    blaster.join()
    return sent, standard_s


def calibrate(
    standard: BatchFeed, store: RedisStateStore, routine_slots: int, seconds: float = 3.0
) -> float:
    """Readings/s the region processes while a standard backlog exists (its capacity).

    The queue is kept a few batches per slot deep for ``seconds``; the rate is
    measured over the last two thirds, once every slot is busy.
    """
    queue = store.keys.broker_queue(queue_name(standard.region, "standard"))
    start = time.time()
    marks: list[tuple[float, int]] = []
    while (now := time.time()) - start < seconds:
        depth = int(store.client.llen(queue))
        if depth < 3 * routine_slots:
            standard.send(3 * routine_slots - depth)
        if now - start >= seconds / 3:
            marks.append((now, processed_readings(store.counters())))
        time.sleep(0.02)
    (t1, d1), (t2, d2) = marks[0], marks[-1]
    return (d2 - d1) / max(t2 - t1, 1e-9)


def tier_latency(
    store: RedisStateStore, tiers: list[str], before: dict[str, Any]
) -> dict[str, Any]:
    out = {}
    for tier in tiers:
        h = counts_since(store.latency_histogram("ingest", tier), before.get(tier, {}))
        out[tier] = {
            "p50": round_ms(percentile_ms(h, 50)),
            "p99": round_ms(percentile_ms(h, 99)),
            "readings": sum(h.values()),
        }
    return out


def long_batch(feed: TierFeed, region: str, tier: str, n: int, batch_id: str) -> Batch:
    now = time.time()
    ids, ts, values = feed.chunk(n, now)
    return Batch(batch_id, region, tier, ("value",), ids, ts, values, np.full(n, now))


def round_ms(x: float | None) -> float | None:
    """Milliseconds to one decimal, as the overload bench reports them."""
    return None if x is None else round(x, 1)
