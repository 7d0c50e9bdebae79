"""The data path on a private redis-server with real ``celery worker`` processes.

Given readings from a mixed fleet, when they are ingested and workers run,
then they land in the right queues, premium overtakes a standard backlog,
a worker killed mid-batch loses nothing and applies nothing twice, and bad
input is dead-lettered with its reason.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator

import numpy as np
import pytest
import redis

from ingest.celery_publisher import CeleryPublisher
from ingest.producer import Producer
from ingest.synthetic import SyntheticStream, bad_readings
from scheduler.batching import BatchingConfig
from scheduler.codec import encode_batch
from scheduler.model import Batch, queue_name
from scheduler.registry import Registry, generate_registry
from stores.inflight import InflightLedger
from stores.keys import Keys
from stores.protocols import processed_readings
from stores.redis_state import RedisStateStore
from tasks.app import broker_app
from tasks.routine import ROUTINE_TASK, claim_id
from workers.cluster import LocalCluster

pytestmark = pytest.mark.integration

REGIONS = ("eu-west", "us-east", "ap-south")
FAST_RECOVERY = {"IOTSCHED_VISIBILITY_TIMEOUT_S": "3", "IOTSCHED_UNACKED_RESTORE_INTERVAL_S": "1"}


class Env:
    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.keys = Keys(prefix)
        self.client = redis.Redis.from_url(url)
        self.store = RedisStateStore(self.client, self.keys)
        self.app = broker_app(url, self.keys)
        self.registry: Registry = generate_registry(20_000, seed=11)
        self.store.save_registry(self.registry)
        self.clusters: list[LocalCluster] = []

    def producer(self, max_readings: int = 500) -> Producer:
        return Producer(
            lambda: self.registry,
            CeleryPublisher(self.app, ledger=InflightLedger(self.client, self.keys)),
            self.store,
            batching=BatchingConfig(max_readings=max_readings),
        )

    def depth(self, queue: str) -> int:
        return sum(int(self.client.llen(k)) for k in self.keys.broker_queue_lists(queue))

    def workers(self, regions: tuple[str, ...] = REGIONS, **env: str) -> LocalCluster:
        cluster = LocalCluster(
            self.url, self.keys.prefix, regions, concurrency=1, env_extra={**FAST_RECOVERY, **env}
        )
        cluster.start()
        self.clusters.append(cluster)
        return cluster

    def wait_processed(self, readings: int, timeout_s: float = 60) -> dict[str, int]:
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            c = self.store.counters()
            if processed_readings(c) >= readings:
                return c
            time.sleep(0.05)
        raise AssertionError(f"only {self.store.counters()} of {readings} processed")


def _signal_all(pids: list[int], signum: int) -> None:
    """A pool process may exit (and be reaped) between listing and signalling it; the
    caller lists the tree again on its next look."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def _process_tree(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False)
    return [pid, *(int(p) for p in found.stdout.split())]


def _half_applied_batch(env: Env) -> str | None:
    """A batch whose first chunk is claimed (applied) but which is not done: mid-application."""
    for raw in env.client.hkeys(env.keys.inflight):
        batch_id = raw.decode()
        if env.client.exists(env.keys.claim(claim_id(batch_id, 0))):
            return batch_id
    return None


def freeze_mid_batch(env: Env, cluster: LocalCluster, timeout_s: float = 60) -> str:
    """SIGSTOP the cluster's workers (the region's data worker and its premium lane) at a
    moment a batch is half applied; returns its id.

    Frozen, nothing can finish the batch between the check and the kill that follows.
    """
    deadline = time.time() + timeout_s
    while True:
        tree = [pid for proc in cluster.procs.values() for pid in _process_tree(proc.pid)]
        _signal_all(tree, signal.SIGSTOP)
        batch_id = _half_applied_batch(env)
        if batch_id is not None:
            return batch_id
        _signal_all(tree, signal.SIGCONT)
        assert time.time() < deadline, "no batch was ever seen half applied"
        time.sleep(0.005)


@pytest.fixture
def env(redis_server: str, key_prefix: str) -> Iterator[Env]:
    e = Env(redis_server, key_prefix)
    yield e
    for c in e.clusters:
        c.stop()
    e.app.close()
    e.store.delete_all()


def test_mixed_tiers_and_regions_land_in_their_own_queues(env: Env) -> None:
    # Given no worker runs, when a mixed stream is ingested
    reg = env.registry
    producer = env.producer()
    ids = reg.device_id[:6_000]
    producer.ingest_columns(ids, np.full(len(ids), time.time()), np.ones(len(ids)))
    producer.flush()
    # Then every (region, tier) queue holds exactly its devices' batches
    rows = reg.lookup(ids)
    for r, region in enumerate(REGIONS):
        for t, tier in enumerate(reg.topology.tiers):
            want = int(np.sum((reg.home_region[rows] == r) & (reg.tier[rows] == t)))
            batches = env.depth(queue_name(region, tier))
            assert want > 0
            assert batches == -(-want // 500), (region, tier)
    assert env.depth("default") == 0


def test_premium_is_taken_before_a_long_standard_backlog(env: Env) -> None:
    # Given 20 large standard batches queued in eu-west, then one small premium batch
    reg = env.registry
    producer = env.producer(max_readings=20_000)
    std = np.resize(reg.device_id[(reg.home_region == 0) & (reg.tier == 1)], 20_000)
    prem = reg.device_id[(reg.home_region == 0) & (reg.tier == 0)][:100]
    now = time.time()
    for _ in range(20):
        producer.ingest_columns(std, np.full(len(std), now), np.ones(len(std)))
    producer.ingest_columns(prem, np.full(len(prem), now), np.ones(len(prem)))
    producer.flush()
    assert env.depth("eu-west.standard") == 20 and env.depth("eu-west.premium") == 1
    # When one eu-west worker starts
    env.workers(("eu-west",))
    deadline = time.time() + 60
    while env.store.counters().get("processed:premium", 0) < 100:
        assert time.time() < deadline, "premium batch never processed"
        time.sleep(0.002)
    standard_before = env.store.counters().get("processed:standard", 0)
    # Then the premium batch was done while at most the one standard batch a
    # worker may hold prefetched had been
    assert standard_before <= 20_000
    env.wait_processed(100 + 20 * 20_000)


def test_a_worker_killed_mid_batch_loses_nothing_and_applies_nothing_twice(env: Env) -> None:
    # Given a backlog of large batches in one region
    reg = env.registry
    producer = env.producer(max_readings=20_000)
    stream = SyntheticStream(reg, seed=1)
    eu = reg.device_id[reg.home_region == 0]
    total = 0
    for _ in range(15):
        _, ts, values = stream.chunk(20_000, time.time())
        ids = np.resize(eu, 20_000)
        producer.ingest_columns(ids, ts, values)
        total += 20_000
    producer.flush()
    # When its workers are SIGKILLed while a batch is provably half applied, then replaced
    cluster = env.workers(("eu-west",))
    half_done = freeze_mid_batch(env, cluster)
    for name in list(cluster.procs):
        cluster.kill(name)
    killed_at = env.store.counters()
    assert env.client.hexists(env.keys.inflight, half_done)
    env.workers(("eu-west",))
    c = env.wait_processed(total, timeout_s=90)
    # Then every reading is applied exactly once, the half-applied batch included
    assert processed_readings(killed_at) < total
    assert processed_readings(c) == total
    assert env.store.rollup_count_total() == total
    # The ledger entry goes in a round trip after the last chunk's commit counted it
    deadline = time.time() + 30
    while env.client.hexists(env.keys.inflight, half_done) and time.time() < deadline:
        time.sleep(0.05)
    assert not env.client.hexists(env.keys.inflight, half_done)


def test_bad_input_is_dead_lettered_with_its_reason(env: Env) -> None:
    # Given bad single readings and a corrupt batch message
    producer = env.producer()
    now = time.time()
    result = producer.ingest(bad_readings(now, ("value",)))
    env.app.send_task(
        ROUTINE_TASK,
        args=({"v": 1, "id": "corrupt", "n": 3},),
        queue="us-east.standard",
        serializer="msgpack",
    )
    # When a worker runs
    env.workers(("us-east",))
    deadline = time.time() + 30
    while time.time() < deadline and len(env.store.dead_letters(100)) < 10:
        time.sleep(0.05)
    # Then each is in the dead-letter stream with the reason ingest or the task gave
    assert result.accepted == 0
    reasons = [d.reason for d in env.store.dead_letters(100)]
    assert sorted(reasons) == sorted(
        [
            "malformed",
            "missing_field",
            "extra_field",
            "wrong_type",
            "not_finite",
            "ts_future",
            "ts_past",
            "unknown_device",
            "oversize",
            "invalid_batch",
        ]
    )
    corrupt = next(d for d in env.store.dead_letters(100) if d.reason == "invalid_batch")
    # Counted by the readings its columns carry (none), never by the n it claims.
    assert corrupt.source == ROUTINE_TASK and corrupt.readings == 0


def test_a_batch_the_broker_lost_is_published_again_from_the_ledger(env: Env) -> None:
    # Given a routine batch recorded in the in-flight ledger whose message never reached
    # the queue (as when a worker dies between BRPOP and kombu's unacked bookkeeping)
    reg = env.registry
    ids = reg.device_id[(reg.home_region == 1) & (reg.tier == 1)][:3_000]
    batch = Batch(
        "lost:us-east:standard:1",
        "us-east",
        "standard",
        ("value",),
        ids,
        np.full(ids.size, time.time()),
        np.ones((ids.size, 1)),
        np.full(ids.size, time.time()),
    )
    ledger = InflightLedger(env.client, env.keys)
    ledger.record(
        batch.batch_id, "us-east.standard", encode_batch(batch), ROUTINE_TASK, time.time()
    )
    env.store.incr_counters({"ingested": ids.size})
    assert env.depth("us-east.standard") == 0
    # When a worker runs past the grace period (the visibility timeout, 3 s here)
    env.workers(("us-east",))
    c = env.wait_processed(ids.size, timeout_s=30)
    # Then the reaper published it again, it was applied once, and the ledger is empty
    assert c["processed:standard"] == ids.size
    assert env.store.rollup_count_total() == ids.size
    assert ledger.size() == 0
