"""The packed screening and routine writes on a real redis-server: a batch of thousands of
devices of every id width keeps its states and rollups exactly, a redelivery applies
nothing, and a Redis at maxmemory refuses a batch whole, in a way the routine task knows."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import redis

from scheduler.detection import screen
from scheduler.detector_config import DetectorConfig
from scheduler.rollup import compute_rollups
from stores.detector_store import RedisDetectorStore
from stores.keys import Keys
from stores.redis_state import RedisStateStore
from tasks.routine import store_refused

pytestmark = pytest.mark.integration

#: Device ids of every decimal width, out of order.
DEVICES = np.random.default_rng(3).permutation(
    np.r_[np.arange(1, 3_000, dtype=np.uint64), np.array([10**12, 2**64 - 1], dtype=np.uint64)]
)


@pytest.fixture
def client(redis_server: str) -> Iterator[redis.Redis]:
    conn = redis.Redis.from_url(redis_server)
    try:
        yield conn
    finally:
        conn.config_set("maxmemory", 0)
        conn.close()


def test_a_screened_batch_of_every_id_width_comes_back_bit_for_bit(
    client: redis.Redis, key_prefix: str
) -> None:
    # Given a batch of devices of every id width, screened and committed
    store = RedisDetectorStore(client, Keys(key_prefix))
    devices = np.unique(DEVICES)
    loaded = store.load("b1", devices, 1)
    assert loaded.states is not None
    ts = np.full(devices.size, 1_000.0)
    result = screen(
        loaded.states, np.arange(devices.size), ts, np.ones(devices.size), DetectorConfig()
    )
    frontier = ("eu-west", "standard", 1_000.5)
    assert store.commit(loaded, result.states, {5: 2}, devices.size, 0, b"rec", frontier)
    b0 = store.load("b0", devices[:1], 1)
    assert store.commit(b0, result.states[:1], {}, 1, 0, b"", ("eu-west", "standard", 999.0))
    # When the devices are loaded for the next batch, in another order
    again = store.load("b2", DEVICES, 1).states
    # Then each gets its own committed row, and the batch counts once
    assert again is not None
    back = {int(d): row.tobytes() for d, row in zip(DEVICES, again, strict=True)}
    mine = {int(d): row.tobytes() for d, row in zip(devices, result.states, strict=True)}
    assert back == mine
    assert store.load("b1", devices, 1).states is None
    assert not store.commit(loaded, result.states, {5: 2}, devices.size, 0, b"rec")
    # The stream's frontier moved to the newest event time and never back
    assert store.frontier("eu-west") == {"standard": 1_000.5}
    assert store.screen_counters() == {
        "screened_readings": devices.size + 1,
        "device_alerts": 0,
        "screen_duplicates": 1,
        "screen_collisions": 0,
    }
    assert store.detection_histogram() == {5: 2} and store.recent_alerts() == [b"rec"]


def test_a_routine_batch_of_every_id_width_merges_into_its_rollups_once(
    client: redis.Redis, key_prefix: str
) -> None:
    # Given two batches over the same devices in two minutes
    store = RedisStateStore(client, Keys(key_prefix))
    n = DEVICES.size
    first = compute_rollups(DEVICES, np.full(n, 61.0), np.full((n, 1), 2.0))
    second = compute_rollups(
        np.r_[DEVICES, DEVICES], np.r_[np.full(n, 62.0), np.full(n, 125.0)], np.ones((2 * n, 1))
    )
    # When each is applied, the second twice
    assert store.apply_batch("a", "standard", first, {"ingest": {7: n}}, n)
    assert store.apply_batch("b", "standard", second, {}, 2 * n)
    assert not store.apply_batch("b", "standard", second, {}, 2 * n)
    # Then every device's minute holds both batches, the next minute the second only
    for device in (1, 2_999, 10**12, 2**64 - 1):
        r = store.rollup(device, 60, 1)
        assert r is not None and (r.count, r.sum, r.min, r.max, r.last) == (
            2,
            (3.0,),
            (1.0,),
            (2.0,),
            (1.0,),
        )
        later = store.rollup(device, 120, 1)
        assert later is not None and later.count == 1
    counters = store.counters()
    assert counters["processed:standard"] == 3 * n and counters["duplicate_deliveries"] == 1
    assert store.latency_histogram("ingest", "standard") == {7: n}


def test_at_maxmemory_a_batch_is_refused_whole_and_known_as_refused(
    client: redis.Redis, key_prefix: str
) -> None:
    # Given a Redis that refuses every write queued in a MULTI
    store = RedisStateStore(client, Keys(key_prefix))
    batch = compute_rollups(DEVICES[:10], np.full(10, 61.0), np.ones((10, 1)))
    client.config_set("maxmemory", 1)
    # When a routine batch is applied
    with pytest.raises(redis.ResponseError) as refused:
        store.apply_batch("a", "standard", batch, {}, 10)
    client.config_set("maxmemory", 0)
    # Then the task sees a refusal (left to the in-flight ledger) and nothing was applied
    assert store_refused(refused.value)
    assert store.rollup(int(DEVICES[0]), 60, 1) is None
    assert store.apply_batch("a", "standard", batch, {}, 10)
