"""Accelerated processing with real workers on real Redis.

Given routine work queued for a region with no routine worker yet (only an anomaly
and screening worker), when a device spikes, then the anomaly workflow applies the
queued chunks holding that device at once; when the routine worker starts later it
skips them, and every reading is applied exactly once.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import redis

from ingest.celery_publisher import CeleryPublisher
from ingest.producer import Producer
from scheduler.batching import BatchingConfig
from scheduler.geography import DEFAULT_SITES
from scheduler.model import SCREEN_PREMIUM_KIND, WorkClass, queue_name
from scheduler.registry import generate_registry
from stores.detector_store import RedisDetectorStore
from stores.keys import Keys
from stores.protocols import processed_readings
from stores.queue_scan import QueueScan
from stores.redis_state import RedisStateStore
from tasks import routine
from tasks.app import broker_app
from workers.cluster import PROJECT_ROOT, LocalCluster, worker_env

pytestmark = pytest.mark.integration

SITE = DEFAULT_SITES[0]
REGION = SITE.name
DEVICES = 2_000
WARMUP_READINGS = 25
#: Warm-up cadence: slow enough that the seconds the test takes are no dropout.
INTERVAL_S = 10.0


def wait_for(done: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.time() + timeout_s
    while not done():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def prefix(redis_server: str) -> Iterator[str]:
    p = f"t-{uuid.uuid4().hex[:10]}"
    yield p
    RedisStateStore(redis.Redis.from_url(redis_server), Keys(p)).delete_all()


def anomaly_worker(redis_url: str, prefix: str) -> subprocess.Popen[bytes]:
    """One worker taking only the region's anomaly and screening queues (both tiers')."""
    kinds = (WorkClass.ANOMALY.value, SCREEN_PREMIUM_KIND, WorkClass.SCREEN.value)
    queues = [queue_name(REGION, kind) for kind in kinds]
    argv = [
        sys.executable, "-m", "celery", "-A", "tasks.all:app", "worker",
        "-Q", ",".join(queues), "-n", f"anomaly-{REGION}@%h", "--pool", "solo",
        "--prefetch-multiplier", "1", "--loglevel", "WARNING",
        "--without-mingle", "--without-gossip",
    ]  # fmt: skip
    env = worker_env(redis_url, prefix, IOTSCHED_REGIONS=REGION)
    return subprocess.Popen(argv, env=env, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL)


def test_a_spike_applies_the_devices_queued_routine_chunks_now_and_only_once(
    redis_server: str, prefix: str
) -> None:
    keys = Keys(prefix)
    client = redis.Redis.from_url(redis_server)
    store = RedisStateStore(client, keys)
    registry = generate_registry(DEVICES, seed=3, sites=(SITE,))
    store.save_registry(registry)
    app = broker_app(redis_server, keys)
    producer = Producer(
        lambda: registry,
        CeleryPublisher(app, screening=True),
        store,
        batching=BatchingConfig(max_readings=1_000),
    )
    ids = registry.device_id
    rng = np.random.default_rng(5)
    level = rng.uniform(10.0, 30.0, ids.size)

    def send(ts: float, bump: np.ndarray | None = None) -> None:
        values = level + rng.normal(0.0, 0.5, ids.size) + (0.0 if bump is None else bump)
        producer.ingest_columns(ids, np.full(ids.size, ts), values)
        producer.flush()

    worker = anomaly_worker(redis_server, prefix)
    routine_workers = LocalCluster(
        redis_server, prefix, (REGION,), pool="solo", env_extra={"IOTSCHED_REGIONS": REGION}
    )
    try:
        # Given a warmed-up fleet whose routine batches all wait: no routine worker yet
        start = time.time() - (WARMUP_READINGS + 1) * INTERVAL_S
        for r in range(WARMUP_READINGS):
            send(start + r * INTERVAL_S)
        detector = RedisDetectorStore(client, keys)
        sent = DEVICES * WARMUP_READINGS
        wait_for(lambda: detector.screen_counters()["screened_readings"] >= sent, 20, "warm-up")
        assert store.rollup_count_total() == 0
        # When one device spikes
        device = int(ids[17])
        spike_at = time.time()
        send(spike_at, np.where(ids == device, 40.0, 0.0))
        # Then the anomaly worker applies its queued routine chunks (and only whole chunks)
        wait_for(lambda: store.counters().get("accelerated_chunks", 0) > 0, 10, "acceleration")

        # ...all of them, unless a run reached its burst (its share of work above premium):
        # a slow machine applies fewer chunks per burst, and the routine workers take the rest
        def all_applied_or_out_of_budget() -> bool:
            c = store.counters()
            spent = c.get("accelerate_stopped_at_burst", 0) + c.get("accelerate_skipped_budget", 0)
            return _unclaimed_chunks(client, keys, device) == 0 or spent > 0

        wait_for(all_applied_or_out_of_budget, 10, "all its chunks or the budget spent")
        applied_s = time.time() - spike_at
        counts = store.counters()
        accelerated = counts["accelerated_readings"]
        assert 0 < accelerated == store.rollup_count_total() < counts["ingested"]
        print(
            f"spike -> every queued chunk of the device applied within {applied_s:.2f} s: "
            f"{counts['accelerated_chunks']} chunks, {accelerated} readings"
        )
        # When the routine worker starts and drains the queues
        routine_workers.start()
        ingested = counts["ingested"]
        wait_for(lambda: _processed(store) >= ingested, 30, "routine drain")
        # Then every reading was applied exactly once; the accelerated chunks were skipped
        final = store.counters()
        assert store.rollup_count_total() == ingested == _processed(store)
        assert final.get("duplicate_deliveries", 0) >= final["accelerated_chunks"]
        assert final.get("dead_lettered", 0) == 0
    finally:
        routine_workers.stop()
        worker.terminate()
        worker.wait(15)
        app.close()


def _processed(store: RedisStateStore) -> int:
    return processed_readings(store.counters())


def _unclaimed_chunks(client: redis.Redis, keys: Keys, device: int) -> int:
    """Chunks still queued that hold ``device`` and are not yet applied."""
    unclaimed = 0
    for payload in QueueScan(client, keys).routine_payloads(REGION).payloads:
        for chunk in routine.chunks_holding(payload, [device]):
            if not client.exists(keys.claim(routine.claim_id(str(payload["id"]), chunk))):
                unclaimed += 1
    return unclaimed
