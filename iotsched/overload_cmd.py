"""``iotsched overload-bench``: tiers under 5× standard overload, and preemption latency.

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

import argparse
import json
import math
import os
import sys
import threading
import time
import uuid
from typing import Any

import numpy as np
import numpy.typing as npt

from ingest.celery_publisher import CeleryPublisher
from ingest.producer import Producer
from iotsched.argtypes import non_negative_int, positive_float, positive_int
from iotsched.loadrun import stderr_progress, wait_drained
from iotsched.redis_run import RedisRun
from scheduler.batching import BatchingConfig
from scheduler.capacity import CapacityBudget
from scheduler.codec import encode_batch
from scheduler.latency import percentile_ms
from scheduler.model import Batch, WorkClass, queue_name
from scheduler.registry import Registry
from stores.preemption_signal import RedisPreemptionSignal
from stores.protocols import processed_readings
from stores.redis_state import RedisStateStore
from tasks.routine import PROBE_TASK, ROUTINE_TASK
from tasks.screen import SCREEN_TASK
from workers.class_pool import ClassPool

#: Cap on a long batch: a preempted task re-publishes its remainder before it frees the slot.
LONG_BATCH_MAX_READINGS = 100_000


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "overload-bench",
        help="premium vs standard latency under standard overload; preemption latency",
    )
    p.add_argument(
        "--standard-overload", type=positive_float, default=5.0, help="× measured capacity"
    )
    p.add_argument(
        "--premium-rps", type=positive_float, default=2_000.0, help="premium offered rate"
    )
    p.add_argument(
        "--overload-s", type=positive_float, default=4.0, help="length of the overload phase"
    )
    # Two slots by default: one machine's producer can offer 5x one standard slot's rate.
    p.add_argument("--slots", type=positive_int, default=2, help="the region's worker slots")
    p.add_argument(
        "--premium-slots", type=non_negative_int, default=1, help="premium guarantee (slots)"
    )
    p.add_argument(
        "--standard-slots", type=non_negative_int, default=1, help="standard minimum (slots)"
    )
    p.add_argument(
        "--probes", type=non_negative_int, default=20, help="anomaly tasks sent at full load"
    )
    p.add_argument("--batch-readings", type=positive_int, default=5_000, help="micro-batch size")
    p.add_argument("--devices", type=positive_int, default=100_000, help="fleet size")
    p.add_argument("--screening", action="store_true", help="also screen every batch")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0", help="Redis to use")
    p.add_argument("--timeout-s", type=positive_float, default=120.0, help="give up draining after")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--json", action="store_true", help="print only the JSON object")
    p.set_defaults(func=run)


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
        self.app = run_.app
        self.store = run_.store
        self.region = region
        self.screening = screening
        self.n = batch_readings
        self.templates = [
            encode_batch(long_batch(feed, region, "standard", batch_readings, f"t{i}"))
            for i in range(8)
        ]
        self.sent_batches = 0

    def send(self, count: int) -> int:
        """Publish ``count`` batches now; returns the readings sent."""
        now = time.time()
        stamp = np.full(self.n, now).tobytes()
        for _ in range(count):
            payload = dict(self.templates[self.sent_batches % len(self.templates)])
            payload.update(id=f"std-{self.sent_batches}", ts=stamp, ingest_ts=stamp)
            # A short argsrepr: Celery's default saferepr of the raw columns costs
            # the sending thread about an eighth of its time per batch.
            opts = {"serializer": "msgpack", "argsrepr": f"({payload['id']},)"}
            if self.screening:
                self.app.send_task(
                    SCREEN_TASK, args=(payload,), queue=self._queue("screen"), **opts
                )
            self.app.send_task(ROUTINE_TASK, args=(payload,), queue=self._queue("standard"), **opts)
            self.sent_batches += 1
        readings = count * self.n
        self.store.incr_counters({"ingested": readings, "accepted": readings})
        return readings

    def _queue(self, kind: str) -> str:
        return queue_name(self.region, kind)


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


def run(args: argparse.Namespace) -> int:
    if args.standard_overload <= 0 or args.slots < 1:
        raise SystemExit("overload-bench: --standard-overload and --slots must be positive")
    progress = (lambda _line: None) if args.json else stderr_progress
    prefix = f"iotsched-overload-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    budget = CapacityBudget(
        total_slots=args.slots,
        premium_guarantee_slots=args.premium_slots,
        standard_min_slots=args.standard_slots,
    )
    rr = RedisRun(
        args.redis_url,
        prefix,
        args.devices,
        seed=args.seed,
        batching=BatchingConfig(max_readings=args.batch_readings),
    )
    region = rr.settings.regions[0]
    rr.cluster = ClassPool(
        args.redis_url,
        prefix,
        (region,),
        budget=budget,
        env_extra={"IOTSCHED_SCREENING": "1" if args.screening else "0"},
    )
    t0 = time.time()
    with rr as run_:
        registry = run_.registry
        assert registry is not None
        store = run_.store
        topo = registry.topology
        publisher = CeleryPublisher(run_.app, screening=args.screening)
        producer = Producer(lambda: registry, publisher, store, batching=rr.batching)
        feeds = {
            t: TierFeed(registry, topo.region_code(region), topo.tier_code(t), args.seed + i)
            for i, t in enumerate(("premium", "standard"))
        }
        _wait_ready(run_, rr.cluster.node_count)
        setup_s = time.time() - t0

        standard = BatchFeed(run_, feeds["standard"], region, args.batch_readings, args.screening)

        # 1. calibrate: the processing rate while a standard backlog exists.
        progress("calibrating standard capacity")
        capacity_rps = calibrate(
            standard, store, budget.total_slots - budget.premium_guarantee_slots
        )
        wait_drained(store, args.timeout_s, progress)

        # 2. overload: standard at N× capacity, premium at a normal rate.
        before = {t: store.latency_histogram("ingest", t) for t in feeds}
        std_rps = args.standard_overload * capacity_rps
        progress(f"overload: standard {std_rps:,.0f} r/s, premium {args.premium_rps:,.0f} r/s")
        o0 = time.time()
        p0 = store.counters().get("processed:standard", 0)
        sent, standard_s = offer(
            producer, feeds["premium"], args.premium_rps, standard, std_rps, args.overload_s
        )
        offered_s = time.time() - o0
        standard_offered_rps = sent["standard"] / standard_s
        under_load_rps = (store.counters().get("processed:standard", 0) - p0) / offered_s
        drained, _ = wait_drained(store, args.timeout_s, progress)
        latency = tier_latency(store, list(feeds), before)

        # 3. preemption: all slots busy with long batches, anomaly tasks one at a time.
        progress(f"preemption: {args.probes} anomaly tasks at full load")
        preemption = measure_preemption(run_, region, budget, feeds, capacity_rps, args.probes)
        drained_all, _ = wait_drained(store, args.timeout_s, progress)

        c = store.counters()
        processed = store.rollup_count_total()
        ingested = c.get("ingested", 0)
        dead = c.get("dead_lettered", 0)
        summary: dict[str, Any] = {
            "region": region,
            "layout": {w.name: w.concurrency for w in rr.cluster.layout[region]},
            "standard_capacity_rps": round(capacity_rps, 1),
            "standard_overload_requested": args.standard_overload,
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
            "counts": {
                "ingested": ingested,
                "processed": processed,
                "dead_lettered": dead,
                "deferred_readings": c.get("deferred_readings", 0),
                "deferrals_preempted": c.get("deferrals:preempted", 0),
                "lost": max(0, ingested - processed - dead),
                "duplicated": max(0, processed - (ingested - dead)),
                "duplicate_chunks_skipped": c.get("duplicate_deliveries", 0),
            },
            "drained": drained and drained_all,
            "setup_seconds": round(setup_s, 2),
            "seconds": round(time.time() - t0, 2),
        }
    print(json.dumps(summary, indent=None if args.json else 2))
    counts = summary["counts"]
    return 0 if summary["drained"] and counts["lost"] == 0 and counts["duplicated"] == 0 else 1


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
    publisher = CeleryPublisher(run_.app, screening=False)
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
            publisher.publish(long_batch(feeds[tier], region, tier, batch_n, f"long-{tier}-{i}"))
            total += batch_n
    store.incr_counters({"ingested": total, "accepted": total})
    time.sleep(1.0)  # every slot takes a long batch
    signal = RedisPreemptionSignal(store.client, store.keys)
    queue = queue_name(region, WorkClass.ANOMALY.value)
    for i in range(probes):
        run_.app.send_task(PROBE_TASK, args=(region, time.time(), 20.0), queue=queue)
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
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if len(run_.app.control.ping(timeout=0.5) or []) >= nodes:
            return
    print("overload-bench: workers did not answer within 60 s", file=sys.stderr)


def _ms(x: float | None) -> float | None:
    return None if x is None else round(x, 1)
