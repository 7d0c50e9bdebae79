"""Behind ``iotsched partition-bench``: a region cut off and healed, on real workers and Redis.

Two regions, each with its own broker (eu-west on Redis db 1, us-east on the
shared db 0), one data worker each, heartbeats, and the regional placer. The
eu-west worker reaches Redis (its broker and the shared state) only through a
TCP link this bench controls (bench.link_cut). The link is cut: nothing
crosses, nothing is closed, the worker keeps running, its heartbeats stop
arriving; readings keep coming. Those of eu-west devices that may also be
processed in us-east fail over there; those locked to eu-west wait in
eu-west's queue. The link heals and the same worker drains the queue.
Printed: detection time, the counts at each stage checked against each other,
and the drain after healing.

Where a reading was processed is the region of the queue it was published to:
a region's workers consume only ``{region}.*`` (``workers/profiles.py``), on
that region's broker. So residency is checked on every published batch (an
audit wrapper around the publisher) and, during the partition, by decoding
what actually sits in eu-west's broker lists.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import redis

from bench.link_cut import LinkCut
from bench.maintenance import wait_for
from ingest.placement import PlacerConfig, make_placer, read_account
from ingest.producer import Producer, Publisher
from ingest.regional_publisher import RegionalPublisher
from ingest.synthetic import SyntheticStream
from scheduler.batching import BatchingConfig
from scheduler.codec import decode_batch
from scheduler.geography import DEFAULT_SITES
from scheduler.model import Batch, queue_name
from scheduler.registry import Registry, generate_registry
from stores.health_store import DATA_KINDS, HealthStore
from stores.keys import Keys
from stores.protocols import processed_readings
from stores.queue_scan import decode_routine
from stores.redis_state import RedisStateStore
from tasks.app import broker_app
from workers.cluster import LocalCluster

SITES = DEFAULT_SITES[:2]
REGIONS = tuple(s.name for s in SITES)
CUT, KEPT = REGIONS
FAST_RECOVERY = {"IOTSCHED_VISIBILITY_TIMEOUT_S": "5", "IOTSCHED_UNACKED_RESTORE_INTERVAL_S": "1"}


@dataclass
class AuditPublisher:
    """Counts, per published batch, readings outside their allowed regions (must stay 0)."""

    inner: Publisher
    registry: Registry
    outside_allowed: int = 0
    published: dict[str, int] = field(default_factory=dict)

    def publish(self, batch: Batch) -> None:
        bit = 1 << self.registry.topology.region_code(batch.region)
        rows = self.registry.lookup(batch.device_id)
        self.outside_allowed += int(((self.registry.allowed_mask[rows] & bit) == 0).sum())
        self.published[batch.region] = self.published.get(batch.region, 0) + len(batch)
        self.inner.publish(batch)


def queued_batches(client: redis.Redis, keys: Keys, region: str) -> list[Batch]:
    """Decode every routine batch waiting in ``region``'s data queues, as the broker holds it."""
    found = []
    for kind in DATA_KINDS:
        for key in keys.broker_queue_lists(queue_name(region, kind)):
            for raw in client.lrange(key, 0, -1):
                payload = decode_routine(raw)
                if payload is not None:
                    found.append(decode_batch(payload))
    return found


def _with_db(url: str, db: int) -> str:
    return url.rsplit("/", 1)[0] + f"/{db}"


def _link_to(url: str) -> LinkCut:
    """A cuttable TCP link to the Redis server at ``url``."""
    parts = urlsplit(url)
    return LinkCut(parts.hostname or "127.0.0.1", parts.port or 6379)


def _db(url: str) -> int:
    return int(urlsplit(url).path.lstrip("/") or 0)


def partition_scenario(
    redis_url: str,
    key_prefix: str | None = None,
    devices: int = 20_000,
    readings_per_phase: int = 10_000,
    seed: int = 5,
) -> dict[str, Any]:
    started = time.time()
    prefix = key_prefix or f"iotsched-partition-{uuid.uuid4().hex[:8]}"
    keys = Keys(prefix)
    client = redis.Redis.from_url(redis_url)
    cut_broker_url = _with_db(redis_url, 1)
    cut_broker = redis.Redis.from_url(cut_broker_url)
    store = RedisStateStore(client, keys)
    registry = generate_registry(devices, seed=seed, sites=SITES, resident_share=0.3)
    store.save_registry(registry)
    env = {**FAST_RECOVERY, "IOTSCHED_REGIONS": ",".join(REGIONS), "IOTSCHED_SCREENING": "0"}
    # The cut region's worker reaches both its broker and the shared state only
    # through the link: cut, it is a region on the far side of a dropped route.
    link = _link_to(redis_url)
    clusters = {
        CUT: LocalCluster(
            link.url_for(_db(redis_url)), prefix, (CUT,),
            env_extra={**env, "IOTSCHED_BROKER_URL": link.url_for(_db(cut_broker_url))},
        ),
        KEPT: LocalCluster(redis_url, prefix, (KEPT,), env_extra=env),
    }  # fmt: skip
    app = broker_app(redis_url, keys)
    publisher = RegionalPublisher.from_urls(app, {CUT: cut_broker_url}, screening=False)
    audit = AuditPublisher(publisher, registry)
    placer = make_placer(
        client,
        keys,
        registry.topology,
        SITES,
        broker_clients={CUT: cut_broker},
        config=PlacerConfig(refresh_ms=100, silence_timeout_s=2.0),
    )
    producer = Producer(
        lambda: registry,
        audit,
        store,
        batching=BatchingConfig(max_readings=500),
        placer=placer,
    )
    stream = SyntheticStream(registry, seed=seed)
    health = HealthStore(client, keys, REGIONS)
    cut_bit = 1 << registry.topology.region_code(CUT)

    def ingest(n: int) -> np.ndarray:
        ids_all = []
        for _ in range(n // 2_000):
            ids, ts, values = stream.chunk(2_000, time.time())
            producer.ingest_columns(ids, ts, values)
            ids_all.append(ids)
        producer.flush()
        placer.flush()
        return np.concatenate(ids_all)

    def processed() -> int:
        c = store.counters()
        return processed_readings(c) + c.get("dead_lettered", 0)

    try:
        for cluster in clusters.values():
            cluster.start()
        wait_for(lambda: set(REGIONS) <= set(health.heartbeats()), 30, "both regions' heartbeat")
        placer.refresh()

        # Normal operation: every region healthy, readings stay home.
        ingest(readings_per_phase)
        wait_for(lambda: processed() >= store.counters().get("ingested", 0), 30, "normal drain")
        normal = read_account(client, keys)

        # Partition: the link to the cut region's worker goes silent; the worker runs on.
        cut_worker = clusters[CUT].procs[f"data-{CUT}"]
        link.cut()
        cut_at = time.time()

        def cut_seen() -> bool:
            placer.refresh()
            return not placer.healthy_mask & cut_bit

        wait_for(cut_seen, 15, f"{CUT} seen as partitioned")
        detected_s = time.time() - cut_at
        ids = ingest(readings_per_phase)
        rows = registry.lookup(ids)
        from_cut = registry.home_region[rows] == registry.topology.region_code(CUT)
        locked = registry.allowed_mask[rows] == cut_bit
        expected_waiting = int((from_cut & locked).sum())
        ingested_now = store.counters()["ingested"]
        wait_for(lambda: processed() >= ingested_now - expected_waiting, 30, f"{KEPT} drained")
        waiting = queued_batches(cut_broker, keys, CUT)
        waiting_ids = np.concatenate([b.device_id for b in waiting]) if waiting else ids[:0]
        waiting_rows = registry.lookup(waiting_ids)
        during = read_account(client, keys)
        cut_s = time.time() - cut_at
        worker_alive_through_cut = cut_worker.poll() is None

        # Heal: the link carries again; the same worker reconnects nothing, it just resumes.
        link.heal()
        healed_at = time.time()

        def cut_healthy() -> bool:
            placer.refresh()
            return bool(placer.healthy_mask & cut_bit)

        wait_for(cut_healthy, 30, f"{CUT} seen as healthy again")
        healthy_s = time.time() - healed_at
        wait_for(lambda: processed() >= store.counters()["ingested"], 30, f"{CUT} backlog drained")
        drained_s = time.time() - healed_at
        same_worker = clusters[CUT].procs.get(f"data-{CUT}") is cut_worker
        same_worker = same_worker and cut_worker.poll() is None
        counts = store.counters()
        done = processed_readings(counts)
        moved = f"readings:{CUT}>{KEPT}"
        return {
            "regions": list(REGIONS),
            "normal": {
                "readings": readings_per_phase,
                "home_share": normal.get("home_readings", 0.0)
                / max(1.0, normal.get("home_readings", 0.0) + normal.get(moved, 0.0)),
            },
            "partition": {
                "cut": f"TCP link between the {CUT} worker and Redis (broker and state) "
                "blackholed; the worker process kept running",
                "worker_alive_through_cut": worker_alive_through_cut,
                "worker_same_process_after_heal": same_worker,
                "cut_lasted_s": round(cut_s, 2),
                "detected_after_s": round(detected_s, 2),
                "readings": readings_per_phase,
                "from_cut_region": int(from_cut.sum()),
                "failed_over_to_kept_region": int(during.get(moved, 0) - normal.get(moved, 0)),
                "expected_waiting_locked": expected_waiting,
                "waiting_in_cut_region_queue": len(waiting_ids),
                "waiting_not_locked": int((registry.allowed_mask[waiting_rows] != cut_bit).sum()),
                "cross_region_bytes": during.get(f"bytes:{CUT}>{KEPT}", 0.0),
                "cross_region_cost": round(during.get(f"cost:{CUT}>{KEPT}", 0.0), 9),
            },
            "after_heal": {
                "healthy_again_after_s": round(healthy_s, 2),
                "backlog_drained_s": round(drained_s, 2),
                "ingested": counts.get("ingested", 0),
                "processed": done,
                "dead_lettered": counts.get("dead_lettered", 0),
                "rollup_count": store.rollup_count_total(),
                "lost": counts.get("ingested", 0) - done - counts.get("dead_lettered", 0),
            },
            "published_by_region": audit.published,
            "outside_allowed": audit.outside_allowed,
            "seconds": round(time.time() - started, 1),
        }
    finally:
        link.heal()
        for cluster in clusters.values():
            cluster.stop()
        link.close()
        publisher.close()
        app.close()
        store.delete_all()
        RedisStateStore(cut_broker, keys).delete_all()
