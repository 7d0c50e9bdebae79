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

Residency is checked on every published batch and, during the partition, on what
actually sits in eu-west's broker lists (bench.residency_audit).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import numpy.typing as npt

from bench.link_cut import LinkCut
from bench.residency_audit import AuditPublisher, queued_batches
from bench.sending import bench_regional_publisher
from bench.worker_launch import wait_for
from ingest.placement import PlacerConfig, make_placer, read_account
from ingest.producer import Producer
from ingest.synthetic import SyntheticStream
from scheduler.batching import BatchingConfig
from scheduler.geography import DEFAULT_SITES
from scheduler.registry import generate_registry
from stores.connection import connect
from stores.health_store import HealthStore
from stores.keys import Keys
from stores.protocols import processed_readings
from stores.redis_state import RedisStateStore
from tasks.app import broker_app
from workers.cluster import LocalCluster

SITES = DEFAULT_SITES[:2]
REGIONS = tuple(s.name for s in SITES)
CUT, KEPT = REGIONS
FAST_RECOVERY = {"IOTSCHED_VISIBILITY_TIMEOUT_S": "5", "IOTSCHED_UNACKED_RESTORE_INTERVAL_S": "1"}


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
    """Normal operation, the cut, the heal; the JSON object of ``iotsched partition-bench``."""
    started = time.time()
    rig = PartitionRig(redis_url, key_prefix, devices, seed)
    try:
        rig.start()
        normal = rig.normal_phase(readings_per_phase)
        cut = rig.cut_phase(readings_per_phase)
        healed = rig.heal_phase()
        moved = f"readings:{CUT}>{KEPT}"
        during = cut.account
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
                "worker_alive_through_cut": cut.worker_alive,
                "worker_same_process_after_heal": healed.pop("same_worker"),
                "cut_lasted_s": round(cut.lasted_s, 2),
                "detected_after_s": round(cut.detected_s, 2),
                "readings": readings_per_phase,
                "from_cut_region": cut.from_cut_region,
                "failed_over_to_kept_region": int(during.get(moved, 0) - normal.get(moved, 0)),
                "expected_waiting_locked": cut.expected_waiting,
                "waiting_in_cut_region_queue": cut.waiting,
                "waiting_not_locked": cut.waiting_not_locked,
                "cross_region_bytes": during.get(f"bytes:{CUT}>{KEPT}", 0.0),
                "cross_region_cost": round(during.get(f"cost:{CUT}>{KEPT}", 0.0), 9),
            },
            "after_heal": healed,
            "published_by_region": rig.audit.published,
            "outside_allowed": rig.audit.outside_allowed,
            "seconds": round(time.time() - started, 1),
        }
    finally:
        rig.close()


@dataclass(frozen=True)
class CutOutcome:
    worker_alive: bool
    lasted_s: float
    detected_s: float
    from_cut_region: int
    #: Readings of devices allowed only in the cut region: they must wait there.
    expected_waiting: int
    waiting: int
    waiting_not_locked: int
    #: The placement account (readings, bytes, cost moved between regions) during the cut.
    account: dict[str, float]


class PartitionRig:
    """Two regions' workers (the cut one behind a cuttable link), the placer and the producer."""

    def __init__(self, redis_url: str, key_prefix: str | None, devices: int, seed: int) -> None:
        prefix = key_prefix or f"iotsched-partition-{uuid.uuid4().hex[:8]}"
        self.keys = keys = Keys(prefix)
        self.client = client = connect(redis_url)
        cut_broker_url = _with_db(redis_url, 1)
        self.cut_broker = connect(cut_broker_url)
        self.store = RedisStateStore(client, keys)
        self.registry = registry = generate_registry(
            devices, seed=seed, sites=SITES, resident_share=0.3
        )
        self.store.save_registry(registry)
        env = {**FAST_RECOVERY, "IOTSCHED_REGIONS": ",".join(REGIONS), "IOTSCHED_SCREENING": "0"}
        # The cut region's worker reaches both its broker and the shared state only
        # through the link: cut, it is a region on the far side of a dropped route.
        self.link = link = _link_to(redis_url)
        self.clusters = {
            CUT: LocalCluster(
                link.url_for(_db(redis_url)), prefix, (CUT,),
                env_extra={**env, "IOTSCHED_BROKER_URL": link.url_for(_db(cut_broker_url))},
            ),
            KEPT: LocalCluster(redis_url, prefix, (KEPT,), env_extra=env),
        }  # fmt: skip
        self.app = broker_app(redis_url, keys)
        self.publisher = bench_regional_publisher(self.app, {CUT: cut_broker_url}, screening=False)
        self.audit = AuditPublisher(self.publisher, registry)
        self.placer = make_placer(
            client,
            keys,
            registry.topology,
            SITES,
            broker_clients={CUT: self.cut_broker},
            config=PlacerConfig(refresh_ms=100, silence_timeout_s=2.0),
        )
        self.producer = Producer(
            lambda: registry,
            self.audit,
            self.store,
            batching=BatchingConfig(max_readings=500),
            placer=self.placer,
        )
        self.stream = SyntheticStream(registry, seed=seed)
        self.health = HealthStore(client, keys, REGIONS)
        self.cut_bit = 1 << registry.topology.region_code(CUT)

    def ingest(self, n: int) -> npt.NDArray[np.uint64]:
        ids_all = []
        for _ in range(n // 2_000):
            ids, ts, values = self.stream.chunk(2_000, time.time())
            self.producer.ingest_columns(ids, ts, values)
            ids_all.append(ids)
        self.producer.flush()
        self.placer.flush()
        return np.concatenate(ids_all)

    def processed(self) -> int:
        """Readings applied or dead-lettered: every ingested one, once drained."""
        c = self.store.counters()
        return processed_readings(c) + c.get("dead_lettered", 0)

    def cut_healthy(self) -> bool:
        """Whether any tier still places readings in the cut region: its data worker and
        its premium lane both sit behind the link, and the lane's last beat may stay fresh
        a heartbeat longer than the data worker's (premium then still goes home)."""
        self.placer.refresh()
        masks = int(np.bitwise_or.reduce(self.placer.tier_masks))
        return bool((self.placer.healthy_mask | masks) & self.cut_bit)

    def start(self) -> None:
        for cluster in self.clusters.values():
            cluster.start()
        wait_for(
            lambda: set(REGIONS) <= set(self.health.heartbeats()), 30, "both regions' heartbeat"
        )
        self.placer.refresh()

    def normal_phase(self, readings: int) -> dict[str, float]:
        """Every region healthy, readings stay home; the placement account afterwards."""
        self.ingest(readings)
        wait_for(
            lambda: self.processed() >= self.store.counters().get("ingested", 0),
            30,
            "normal drain",
        )
        return read_account(self.client, self.keys)

    def cut_phase(self, readings: int) -> CutOutcome:
        """The link to the cut region's worker goes silent; the worker runs on."""
        registry = self.registry
        self.cut_worker = self.clusters[CUT].procs[f"data-{CUT}"]
        self.link.cut()
        cut_at = time.time()
        wait_for(lambda: not self.cut_healthy(), 15, f"{CUT} seen as partitioned")
        detected_s = time.time() - cut_at
        ids = self.ingest(readings)
        rows = registry.lookup(ids)
        from_cut = registry.home_region[rows] == registry.topology.region_code(CUT)
        locked = registry.allowed_mask[rows] == self.cut_bit
        expected_waiting = int((from_cut & locked).sum())
        ingested_now = self.store.counters()["ingested"]
        wait_for(lambda: self.processed() >= ingested_now - expected_waiting, 30, f"{KEPT} drained")
        waiting = queued_batches(self.cut_broker, self.keys, CUT)
        waiting_ids = np.concatenate([b.device_id for b in waiting]) if waiting else ids[:0]
        waiting_rows = registry.lookup(waiting_ids)
        during = read_account(self.client, self.keys)
        return CutOutcome(
            worker_alive=self.cut_worker.poll() is None,
            lasted_s=time.time() - cut_at,
            detected_s=detected_s,
            from_cut_region=int(from_cut.sum()),
            expected_waiting=expected_waiting,
            waiting=len(waiting_ids),
            waiting_not_locked=int((registry.allowed_mask[waiting_rows] != self.cut_bit).sum()),
            account=during,
        )

    def heal_phase(self) -> dict[str, Any]:
        """The link carries again; the same worker reconnects nothing, it just resumes.

        ``same_worker`` is taken out by the caller: it belongs to the partition's report."""
        self.link.heal()
        healed_at = time.time()
        wait_for(self.cut_healthy, 30, f"{CUT} seen as healthy again")
        healthy_s = time.time() - healed_at
        wait_for(
            lambda: self.processed() >= self.store.counters()["ingested"],
            30,
            f"{CUT} backlog drained",
        )
        drained_s = time.time() - healed_at
        same_worker = self.clusters[CUT].procs.get(f"data-{CUT}") is self.cut_worker
        counts = self.store.counters()
        done = processed_readings(counts)
        return {
            "same_worker": same_worker and self.cut_worker.poll() is None,
            "healthy_again_after_s": round(healthy_s, 2),
            "backlog_drained_s": round(drained_s, 2),
            "ingested": counts.get("ingested", 0),
            "processed": done,
            "dead_lettered": counts.get("dead_lettered", 0),
            "rollup_count": self.store.rollup_count_total(),
            "lost": counts.get("ingested", 0) - done - counts.get("dead_lettered", 0),
        }

    def close(self) -> None:
        self.link.heal()
        for cluster in self.clusters.values():
            cluster.stop()
        self.link.close()
        self.publisher.close()
        self.app.close()
        self.store.delete_all()
        RedisStateStore(self.cut_broker, self.keys).delete_all()
