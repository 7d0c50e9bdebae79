"""Detector state store contract: the Redis store and its in-memory twin behave alike."""

from __future__ import annotations

from collections.abc import Iterator

import fakeredis
import numpy as np
import pytest

from scheduler.detection import screen
from scheduler.detector_config import DetectorConfig
from scheduler.detector_state import fresh_states
from scheduler.latency import percentile_ms
from stores.detector_store import (
    DetectorStore,
    MemoryDetectorStore,
    RedisDetectorStore,
    detection_histogram,
)
from stores.keys import Keys


@pytest.fixture(params=["redis", "memory"])
def store(request: pytest.FixtureRequest) -> Iterator[DetectorStore]:
    if request.param == "redis":
        client = fakeredis.FakeRedis()
        yield RedisDetectorStore(client, Keys("t"))
        client.flushall()
    else:
        yield MemoryDetectorStore()


def _ids(*ids: int) -> np.ndarray:
    return np.array(ids, dtype=np.uint64)


def test_unknown_devices_load_fresh(store: DetectorStore) -> None:
    # Given an empty store
    # When states of devices never seen are loaded
    states = store.load("b1", _ids(7, 8), metrics=2)
    # Then they are fresh states of the asked width
    assert states is not None
    np.testing.assert_array_equal(states, fresh_states(2, 2))


def test_committed_states_come_back_for_the_next_batch(store: DetectorStore) -> None:
    # Given a batch screened and committed
    ids = _ids(1, 2, 3)
    states = store.load("b1", ids, 1)
    assert states is not None
    result = screen(
        states, np.arange(3), np.full(3, 100.0), np.array([1.0, 2.0, 3.0]), DetectorConfig()
    )
    assert store.commit("b1", ids, result.states, {}, readings=3, alerts=0)
    # When the next batch loads two of the devices, in another order
    again = store.load("b2", _ids(3, 1), 1)
    # Then it gets exactly the committed rows
    assert again is not None
    np.testing.assert_array_equal(again, result.states[[2, 0]])


def test_a_batch_is_committed_once(store: DetectorStore) -> None:
    # Given a committed batch, its latency counted in the tier's stage too
    ids = _ids(1)
    states = fresh_states(1)
    states[0, 0] = 5.0
    tier = ("alert:standard",)
    assert store.commit("b1", ids, states, {10: 1}, 1, 1, latency_stages=tier)
    # When the same batch is loaded again and committed with other states
    assert store.load("b1", ids, 1) is None
    other = fresh_states(1)
    assert not store.commit("b1", ids, other, {10: 1}, 1, 1, latency_stages=tier)
    # Then nothing of the second commit is stored, and the duplicate is counted
    loaded = store.load("b2", ids, 1)
    assert loaded is not None and loaded[0, 0] == 5.0
    assert store.detection_histogram() == {10: 1}
    assert store.detection_histogram("alert:standard") == {10: 1}
    assert store.screen_counters() == {
        "screened_readings": 1,
        "device_alerts": 1,
        "screen_duplicates": 1,
    }


def test_a_state_of_another_layout_rewarms(store: DetectorStore) -> None:
    # Given a device stored with one metric
    ids = _ids(4)
    one = fresh_states(1, 1)
    one[0, 0] = 30.0
    assert store.commit("b1", ids, one, {}, readings=1, alerts=0)
    # When it is loaded as a two-metric device
    states = store.load("b2", ids, 2)
    # Then it starts fresh instead of misreading the old bytes
    assert states is not None
    np.testing.assert_array_equal(states, fresh_states(1, 2))


def test_latency_histograms_accumulate_per_stage(store: DetectorStore) -> None:
    # Given alert latency from two batches and one notify sample
    store.commit("b1", _ids(1), fresh_states(1), {40: 2}, readings=1, alerts=2)
    store.commit("b2", _ids(2), fresh_states(1), {40: 1, 50: 1}, readings=1, alerts=2)
    store.add_latency("notify", {60: 1})
    # Then each stage has its own merged histogram
    assert store.detection_histogram() == {40: 3, 50: 1}
    assert store.detection_histogram("notify") == {60: 1}
    assert percentile_ms(store.detection_histogram(), 50) is not None


def test_bench_reads_the_histogram_from_a_client_and_keys() -> None:
    # Given a Redis store under a run's prefix that recorded alert latency
    client = fakeredis.FakeRedis()
    keys = Keys("run-1")
    RedisDetectorStore(client, keys).commit(
        "b1", _ids(1), fresh_states(1), {30: 4}, readings=1, alerts=4
    )
    # When the benchmark reads it with only the client and the keys
    # Then it sees the same counts, and nothing of another prefix
    assert detection_histogram(client, keys) == {30: 4}
    assert detection_histogram(client, Keys("run-2")) == {}


def test_states_carry_no_ttl_because_maintenance_compacts_silent_devices() -> None:
    # Given a Redis store that committed one device's state
    client = fakeredis.FakeRedis()
    keys = Keys("t")
    RedisDetectorStore(client, keys).commit("b1", _ids(9), fresh_states(1), {}, 1, 0)
    # Then the state persists (bounded by the fleet), while the batch claim expires
    assert client.ttl(keys.detector_state(9)) == -1
    assert client.ttl(keys.screen_claim("b1")) > 0
