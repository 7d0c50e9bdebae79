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

import math
import os
import time
import uuid
from dataclasses import dataclass
from typing import Any

from bench.loadrun import Progress, wait_drained
from bench.overload_load import (
    BatchFeed,
    TierFeed,
    calibrate,
    long_batch,
    offer,
    round_ms,
    tier_latency,
)
from bench.redis_run import RedisRun
from bench.sending import bench_publisher, send_batches, send_probe
from ingest.producer import Producer
from scheduler.batching import BatchingConfig
from scheduler.capacity import CapacityBudget
from scheduler.latency import percentile_ms
from stores.preemption_signal import RedisPreemptionSignal
from stores.redis_state import RedisStateStore
from workers.class_pool import ClassPool

#: Cap on a long batch: a preempted task re-publishes its remainder before it frees the slot.
LONG_BATCH_MAX_READINGS = 100_000


def _quiet(_line: str) -> None:
    """Progress for ``--json``: nothing on stderr."""


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
        "p50": round_ms(percentile_ms(hist, 50)),
        "p99": round_ms(percentile_ms(hist, 99)),
        "max": round_ms(percentile_ms(hist, 100)),
        "probes": sum(hist.values()),
        "long_batch_readings": batch_n,
    }
