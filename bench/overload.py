"""Behind ``iotsched overload-bench``: tiers under 5× standard overload, and preemption latency.

Real Redis, real ``celery worker`` processes laid out by capacity class
(workers/class_pool.py) for one region. Three phases, one JSON object:

1. calibrate: standard readings as fast as the producer can offer them; the
   region's standard capacity is the processing rate measured while a backlog
   exists;
2. overload: standard offered at ``--standard-overload`` × that capacity while
   premium runs at ``--premium-rps``; then everything drains. Per-tier latency
   (ingest → processed) comes from the store's histograms, counted over this
   phase only;
3. preemption: every slot busy with long routine batches (premium ones on the
   premium slots), then anomaly tasks sent one at a time to the anomaly queue;
   each records its wait, enqueued → started.

Counts then show every accepted reading processed once or dead-lettered. The
run owns one key prefix (state and broker keys) and deletes it at the end.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from bench.loadrun import Progress, wait_drained
from bench.redis_run import RedisRun
from bench.sending import bench_publisher, send_batches, send_probe
from bench.worker_launch import wait_workers_ready
from ingest.producer import Producer
from scheduler.batching import BatchingConfig
from scheduler.capacity import CapacityBudget
from scheduler.latency import percentile_ms
from scheduler.model import Batch, queue_name
from scheduler.registry import Registry
from stores.preemption_signal import RedisPreemptionSignal
from stores.protocols import processed_readings
from stores.redis_state import RedisStateStore
from workers.class_pool import ClassPool

#: Cap on a long batch: a preempted task re-publishes its remainder before it frees the slot.
LONG_BATCH_MAX_READINGS = 100_000


def _quiet(_line: str) -> None:
    """Progress for ``--json``: nothing on stderr."""


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


def histogram_delta(after: dict[int, int], before: dict[int, int]) -> dict[int, int]:
    return {b: c - before.get(b, 0) for b, c in after.items() if c - before.get(b, 0) > 0}


def tier_latency(
    store: RedisStateStore, tiers: list[str], before: dict[str, Any]
) -> dict[str, Any]:
    out = {}
    for tier in tiers:
        h = histogram_delta(store.latency_histogram("ingest", tier), before.get(tier, {}))
        out[tier] = {
            "p50": _ms(percentile_ms(h, 50)),
            "p99": _ms(percentile_ms(h, 99)),
            "readings": sum(h.values()),
        }
    return out


def long_batch(feed: TierFeed, region: str, tier: str, n: int, batch_id: str) -> Batch:
    now = time.time()
    ids, ts, values = feed.chunk(n, now)
    return Batch(batch_id, region, tier, ("value",), ids, ts, values, np.full(n, now))


@dataclass(frozen=True)
class OverloadConfig:
    redis_url: str
    #: Standard offered at this multiple of the measured standard capacity.
    standard_overload: float = 5.0
    premium_rps: float = 2_000.0
    overload_s: float = 4.0
    slots: int = 2
    premium_slots: int = 1
    standard_slots: int = 1
    probes: int = 20
    batch_readings: int = 5_000
    devices: int = 100_000
    screening: bool = False
    timeout_s: float = 120.0
    seed: int = 0


@dataclass
class OverloadRig:
    """What the three phases share: the run, its producer and the per-tier feeds."""

    run_: RedisRun
    cluster: ClassPool
    region: str
    budget: CapacityBudget
    producer: Producer
    feeds: dict[str, TierFeed]
    standard: BatchFeed


def run_overload(cfg: OverloadConfig, progress: Progress = _quiet) -> dict[str, Any]:
    """Calibrate, overload, preempt; the JSON object of ``iotsched overload-bench``."""
    prefix = f"iotsched-overload-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    budget = CapacityBudget(
        total_slots=cfg.slots,
        premium_guarantee_slots=cfg.premium_slots,
        standard_min_slots=cfg.standard_slots,
    )
    rr = RedisRun(
        cfg.redis_url,
        prefix,
        cfg.devices,
        seed=cfg.seed,
        batching=BatchingConfig(max_readings=cfg.batch_readings),
    )
    region = rr.settings.regions[0]
    cluster = ClassPool(
        cfg.redis_url,
        prefix,
        (region,),
        budget=budget,
        env_extra={"IOTSCHED_SCREENING": "1" if cfg.screening else "0"},
    )
    rr.cluster = cluster
    t0 = time.time()
    with rr as run_:
        rig = _rig(cfg, run_, cluster, region, budget)
        setup_s = time.time() - t0
        summary = _phases(cfg, rig, progress)
        summary.update(setup_seconds=round(setup_s, 2), seconds=round(time.time() - t0, 2))
    return summary


def _rig(
    cfg: OverloadConfig, run_: RedisRun, cluster: ClassPool, region: str, budget: CapacityBudget
) -> OverloadRig:
    registry = run_.registry
    assert registry is not None
    topo = registry.topology
    publisher = bench_publisher(run_.app, screening=cfg.screening)
    producer = Producer(lambda: registry, publisher, run_.store, batching=run_.batching)
    feeds = {
        t: TierFeed(registry, topo.region_code(region), topo.tier_code(t), cfg.seed + i)
        for i, t in enumerate(("premium", "standard"))
    }
    _wait_ready(run_, cluster.node_count)
    standard = BatchFeed(run_, feeds["standard"], region, cfg.batch_readings, cfg.screening)
    return OverloadRig(run_, cluster, region, budget, producer, feeds, standard)


def _phases(cfg: OverloadConfig, rig: OverloadRig, progress: Progress) -> dict[str, Any]:
    store = rig.run_.store
    budget = rig.budget
    # 1. calibrate: the processing rate while a standard backlog exists.
    progress("calibrating standard capacity")
    capacity_rps = calibrate(
        rig.standard, store, budget.total_slots - budget.premium_guarantee_slots
    )
    wait_drained(store, cfg.timeout_s, progress)

    # 2. overload: standard at N× capacity, premium at a normal rate.
    before = {t: store.latency_histogram("ingest", t) for t in rig.feeds}
    std_rps = cfg.standard_overload * capacity_rps
    progress(f"overload: standard {std_rps:,.0f} r/s, premium {cfg.premium_rps:,.0f} r/s")
    o0 = time.time()
    p0 = store.counters().get("processed:standard", 0)
    sent, standard_s = offer(
        rig.producer, rig.feeds["premium"], cfg.premium_rps, rig.standard, std_rps, cfg.overload_s
    )
    offered_s = time.time() - o0
    standard_offered_rps = sent["standard"] / standard_s
    under_load_rps = (store.counters().get("processed:standard", 0) - p0) / offered_s
    drained, _ = wait_drained(store, cfg.timeout_s, progress)
    latency = tier_latency(store, list(rig.feeds), before)

    # 3. preemption: all slots busy with long batches, anomaly tasks one at a time.
    progress(f"preemption: {cfg.probes} anomaly tasks at full load")
    preemption = measure_preemption(
        rig.run_, rig.region, budget, rig.feeds, capacity_rps, cfg.probes
    )
    drained_all, _ = wait_drained(store, cfg.timeout_s, progress)
    return {
        "region": rig.region,
        "layout": {w.name: w.concurrency for w in rig.cluster.layout[rig.region]},
        "standard_capacity_rps": round(capacity_rps, 1),
        "standard_overload_requested": cfg.standard_overload,
        # Achieved: readings sent over the time the sending thread took.
        "standard_offered_rps": round(standard_offered_rps, 1),
        "standard_offered_x_capacity": round(standard_offered_rps / max(capacity_rps, 1e-9), 2),
        "standard_sending_seconds": round(standard_s, 2),
        # Processed while overloaded: producer and workers share the machine's cores.
        "standard_capacity_under_load_rps": round(under_load_rps, 1),
        "standard_offered_x_capacity_under_load": round(
            standard_offered_rps / max(under_load_rps, 1e-9), 2
        ),
        "premium_offered_rps": round(sent.get("premium", 0) / offered_s, 1),
        "overload_seconds": round(offered_s, 2),
        "latency_ms": latency,
        "preemption_latency_ms": preemption,
        "counts": _counts(store),
        "drained": drained and drained_all,
    }


def _counts(store: RedisStateStore) -> dict[str, int]:
    """Every accepted reading processed once or dead-lettered: lost and duplicated are 0."""
    c = store.counters()
    processed = store.rollup_count_total()
    ingested = c.get("ingested", 0)
    dead = c.get("dead_lettered", 0)
    return {
        "ingested": ingested,
        "processed": processed,
        "dead_lettered": dead,
        "deferred_readings": c.get("deferred_readings", 0),
        "deferrals_preempted": c.get("deferrals:preempted", 0),
        "lost": max(0, ingested - processed - dead),
        "duplicated": max(0, processed - (ingested - dead)),
        "duplicate_chunks_skipped": c.get("duplicate_deliveries", 0),
    }


def measure_preemption(
    run_: RedisRun,
    region: str,
    budget: CapacityBudget,
    feeds: dict[str, TierFeed],
    capacity_rps: float,
    probes: int,
) -> dict[str, Any]:
    """Fill every slot with long routine batches, then time anomaly tasks enqueued → started."""
    store = run_.store
    publisher = bench_publisher(run_.app, screening=False)
    routine_slots = budget.total_slots - budget.premium_guarantee_slots
    per_slot_rps = max(capacity_rps / max(routine_slots, 1), 1_000.0)
    batch_n = min(int(per_slot_rps * 2.0), LONG_BATCH_MAX_READINGS)
    # Enough long batches per slot to keep it busy until the last probe has started.
    duration_s = probes * 0.4 + 2.0
    per_slot = math.ceil(duration_s * per_slot_rps / batch_n) + 1
    plan = {
        "standard": routine_slots * per_slot,
        "premium": budget.premium_guarantee_slots * per_slot,
    }
    total = 0
    for tier, count in plan.items():
        for i in range(count):
            long = long_batch(feeds[tier], region, tier, batch_n, f"long-{tier}-{i}")
            total += send_batches(publisher, [long])
    store.incr_counters({"ingested": total, "accepted": total})
    time.sleep(1.0)  # every slot takes a long batch
    signal = RedisPreemptionSignal(store.client, store.keys)
    for i in range(probes):
        send_probe(run_.app, region, hold_ms=20.0)
        deadline = time.time() + 10.0
        while sum(signal.anomaly_start_histogram(region).values()) <= i:
            if time.time() > deadline:
                break
            time.sleep(0.002)
        time.sleep(0.3)  # the preempted slot goes back to routine work
    hist = signal.anomaly_start_histogram(region)
    return {
        "p50": _ms(percentile_ms(hist, 50)),
        "p99": _ms(percentile_ms(hist, 99)),
        "max": _ms(percentile_ms(hist, 100)),
        "probes": sum(hist.values()),
        "long_batch_readings": batch_n,
    }


def _wait_ready(run_: RedisRun, nodes: int, timeout_s: float = 60.0) -> None:
    if not wait_workers_ready(run_.app, nodes, timeout_s):
        print("overload-bench: workers did not answer within 60 s", file=sys.stderr)


def _ms(x: float | None) -> float | None:
    return None if x is None else round(x, 1)
