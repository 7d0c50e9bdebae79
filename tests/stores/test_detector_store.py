"""Detector state store contract: the Redis store and its in-memory twin behave alike."""

from __future__ import annotations

from collections.abc import Iterator

import fakeredis
import numpy as np
import pytest

from scheduler.detection import screen
from scheduler.detector_config import DetectorConfig
from scheduler.detector_state import fresh_states
from scheduler.errors import RegistryChanged
from scheduler.latency import percentile_ms
from scheduler.registry import generate_registry
from stores import detector_store
from stores.detector_store import (
    DetectorStore,
    MemoryDetectorStore,
    RedisDetectorStore,
    detection_histogram,
)
from stores.keys import Keys
from stores.redis_state import RedisStateStore


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
    loaded = store.load("b1", _ids(7, 8), metrics=2)
    # Then they are fresh states of the asked width
    assert loaded.states is not None
    np.testing.assert_array_equal(loaded.states, fresh_states(2, 2))


def test_committed_states_come_back_for_the_next_batch(store: DetectorStore) -> None:
    # Given a batch screened and committed
    ids = _ids(1, 2, 3)
    loaded = store.load("b1", ids, 1)
    assert loaded.states is not None
    result = screen(
        loaded.states, np.arange(3), np.full(3, 100.0), np.array([1.0, 2.0, 3.0]), DetectorConfig()
    )
    assert store.commit(loaded, result.states, {}, readings=3, alerts=0)
    # When the next batch loads two of the devices, in another order
    again = store.load("b2", _ids(3, 1), 1)
    # Then it gets exactly the committed rows
    assert again.states is not None
    np.testing.assert_array_equal(again.states, result.states[[2, 0]])


def test_a_batch_is_committed_once(store: DetectorStore) -> None:
    # Given a committed batch, its latency counted in the tier's stage too
    ids = _ids(1)
    states = fresh_states(1)
    states[0, 0] = 5.0
    tier = ("alert:standard",)
    first, second = store.load("b1", ids, 1), store.load("b1", ids, 1)
    assert store.commit(first, states, {10: 1}, 1, 1, latency_stages=tier)
    # When the same batch, loaded by a second delivery before that, commits other states
    assert store.load("b1", ids, 1).states is None
    other = fresh_states(1)
    assert not store.commit(second, other, {10: 1}, 1, 1, latency_stages=tier)
    # Then nothing of the second commit is stored, and the duplicate is counted
    loaded = store.load("b2", ids, 1).states
    assert loaded is not None and loaded[0, 0] == 5.0
    assert store.detection_histogram() == {10: 1}
    assert store.detection_histogram("alert:standard") == {10: 1}
    assert store.screen_counters() == {
        "screened_readings": 1,
        "device_alerts": 1,
        "screen_duplicates": 1,
        "screen_collisions": 0,
    }


def test_a_state_of_another_layout_rewarms(store: DetectorStore) -> None:
    # Given a device stored with one metric
    ids = _ids(4)
    one = fresh_states(1, 1)
    one[0, 0] = 30.0
    assert store.commit(store.load("b1", ids, 1), one, {}, readings=1, alerts=0)
    # When it is loaded as a two-metric device
    states = store.load("b2", ids, 2).states
    # Then it starts fresh instead of misreading the old bytes
    assert states is not None
    np.testing.assert_array_equal(states, fresh_states(1, 2))


def test_latency_histograms_accumulate_per_stage(store: DetectorStore) -> None:
    # Given alert latency from two batches and one notify sample
    store.commit(store.load("b1", _ids(1), 1), fresh_states(1), {40: 2}, readings=1, alerts=2)
    b2 = store.load("b2", _ids(2), 1)
    store.commit(b2, fresh_states(1), {40: 1, 50: 1}, readings=1, alerts=2)
    store.add_latency("notify", {60: 1})
    # Then each stage has its own merged histogram
    assert store.detection_histogram() == {40: 3, 50: 1}
    assert store.detection_histogram("notify") == {60: 1}
    assert percentile_ms(store.detection_histogram(), 50) is not None


def test_bench_reads_the_histogram_from_a_client_and_keys() -> None:
    # Given a Redis store under a run's prefix that recorded alert latency
    client = fakeredis.FakeRedis()
    keys = Keys("run-1")
    store = RedisDetectorStore(client, keys)
    store.commit(store.load("b1", _ids(1), 1), fresh_states(1), {30: 4}, readings=1, alerts=4)
    # When the benchmark reads it with only the client and the keys
    # Then it sees the same counts, and nothing of another prefix
    assert detection_histogram(client, keys) == {30: 4}
    assert detection_histogram(client, Keys("run-2")) == {}


def test_states_carry_no_ttl_because_maintenance_compacts_silent_devices() -> None:
    # Given a Redis store that committed one device's state
    client = fakeredis.FakeRedis()
    keys = Keys("t")
    store = RedisDetectorStore(client, keys)
    store.commit(store.load("b1", _ids(9), 1), fresh_states(1), {}, 1, 0)
    # Then the state persists (bounded by the fleet), while the batch claim expires
    assert client.ttl(keys.detector_state(9)) == -1
    assert client.ttl(keys.screen_claim("b1")) > 0


def test_a_commit_over_states_changed_since_its_load_is_refused(store: DetectorStore) -> None:
    # Given two batches that loaded device 1 at once, and the second committed first
    first, second = store.load("a", _ids(1, 2), 1), store.load("b", _ids(1), 1)
    mine = fresh_states(1)
    mine[0, 0] = 7.0
    assert store.commit(second, mine, {}, readings=1, alerts=0)
    # When the first commits what it screened from the old state
    refused = not store.commit(first, fresh_states(2), {}, readings=2, alerts=0)
    # Then nothing of it is stored, and a new load sees the state it must screen from
    assert refused
    assert store.screen_counters()["screened_readings"] == 1
    assert store.screen_counters()["screen_collisions"] == 1
    again = store.load("a", _ids(1, 2), 1).states
    assert again is not None and again[0, 0] == 7.0
    assert store.commit(store.load("a", _ids(1, 2), 1), again, {}, readings=2, alerts=0)


def test_a_commit_beside_another_batchs_devices_applies(store: DetectorStore) -> None:
    # Given two batches of different devices loaded at once, the second committed first
    first, second = store.load("a", _ids(1), 1), store.load("b", _ids(2), 1)
    assert store.commit(second, fresh_states(1), {}, readings=1, alerts=0)
    # When the first commits, Then it applies: its own devices did not change
    assert store.commit(first, fresh_states(1), {}, readings=1, alerts=0)
    assert store.screen_counters()["screened_readings"] == 2


@pytest.mark.parametrize("first", ["home", "failover"])
def test_a_failover_batch_and_a_home_batch_over_one_device_are_ordered(
    store: DetectorStore, first: str
) -> None:
    # Given device 1 (eu, standard) loaded at once by an eu batch of standard devices and
    # by a us batch (failover) that also holds a premium device
    loaded = {
        "home": store.load("h", _ids(1), 1, "eu", ("eu:standard",)),
        "failover": store.load("f", _ids(1, 2), 1, "us", ("eu:premium", "eu:standard")),
    }
    later = "failover" if first == "home" else "home"
    mine = fresh_states(loaded[first].device_ids.size)
    mine[0, 0] = 7.0
    # When one commits first
    assert store.commit(loaded[first], mine, {}, readings=mine.shape[0], alerts=0)
    # Then the other, screened from the old state, is refused, whichever region it is in
    rows = loaded[later].device_ids.size
    assert not store.commit(loaded[later], fresh_states(rows), {}, readings=rows, alerts=0)
    assert store.screen_counters()["screen_collisions"] == 1


def test_committed_alerts_wait_in_the_outbox_until_sent(store: DetectorStore) -> None:
    # Given a batch committed with its alerts payload
    payload = {"batch_id": "b1", "device_id": b"\x01" * 8, "n": 1, "emitted_ts": 5.5}
    assert store.commit(
        store.load("b1", _ids(1), 1), fresh_states(1), {}, 1, 1, b"", None, (), payload
    )
    # When a redelivery loads it before the alerts were sent, Then it gets them back
    redelivered = store.load("b1", _ids(1), 1)
    assert redelivered.states is None and redelivered.unsent_alerts == payload
    # And once they are sent, a redelivery has nothing left to send
    store.alerts_sent("b1")
    assert store.load("b1", _ids(1), 1).unsent_alerts is None


def test_the_turn_is_held_by_one_batch_until_its_commit(store: DetectorStore) -> None:
    # Given a batch refused by a collision that took the turn
    assert store.take_turn("a", "eu-west")
    # Then no other batch takes it meanwhile, while the holder may take it again
    assert not store.take_turn("b", "eu-west")
    assert store.take_turn("a", "eu-west")
    # And its commit gives it back
    loaded = store.load("a", _ids(1), 1, region="eu-west")
    assert store.commit(loaded, fresh_states(1), {}, readings=1, alerts=0)
    assert store.take_turn("b", "eu-west")


def test_a_turn_given_back_without_a_commit_frees_the_others(store: DetectorStore) -> None:
    # Given a batch holding the turn that ends without committing
    assert store.take_turn("a", "eu-west")
    # When another batch tries to give it back, Then that changes nothing
    store.give_turn("b", "eu-west")
    assert not store.take_turn("b", "eu-west")
    # And when its holder gives it back, another batch takes it
    store.give_turn("a", "eu-west")
    assert store.take_turn("b", "eu-west")


def test_one_regions_turn_leaves_the_other_regions_free(store: DetectorStore) -> None:
    # Given a batch of eu-west, refused by a collision, holding its region's turn
    assert store.take_turn("a", "eu-west")
    # Then a batch of us-east takes its own region's turn meanwhile
    assert store.take_turn("b", "us-east")
    # And another batch of eu-west does not
    assert not store.take_turn("c", "eu-west")
    # And each holder's commit gives back its own region's turn only
    loaded = store.load("b", _ids(2), 1, region="us-east")
    assert store.commit(loaded, fresh_states(1), {}, readings=1, alerts=0)
    assert store.take_turn("d", "us-east")
    assert not store.take_turn("c", "eu-west")


def test_a_load_waits_for_its_own_regions_turn_only_and_holds_no_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a Redis client with one pooled connection, and a batch of eu-west holding the
    # turn that loaded device 1 and commits the first time anyone waits for it
    client = fakeredis.FakeRedis(max_connections=1)
    store = RedisDetectorStore(client, Keys("t"))
    assert store.take_turn("holder", "eu-west")
    held = store.load("holder", _ids(1), 1, region="eu-west")
    written = fresh_states(1)
    written[0, 0] = 7.0
    waits: list[float] = []

    def holder_commits_meanwhile(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 1:
            assert store.commit(held, written, {}, readings=1, alerts=0)

    monkeypatch.setattr(detector_store.time, "sleep", holder_commits_meanwhile)
    # When a batch of us-east loads device 1, Then it does not wait: it reads the state
    # from before the holder's commit
    other = store.load("other", _ids(1), 1, region="us-east").states
    assert other is not None and other[0, 0] != 7.0 and waits == []
    # When a batch of eu-west loads device 1, Then it waits for the holder's commit (which
    # had the one pooled connection meanwhile) and reads the state that commit wrote
    mine = store.load("mine", _ids(1), 1, region="eu-west").states
    assert mine is not None and mine[0, 0] == 7.0
    assert store.screen_counters()["screened_readings"] == 1


def test_a_commit_waits_for_its_regions_turn_and_then_sees_the_holders_write(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a batch of eu-west loaded before another batch of eu-west, refused by a
    # collision over the same device, took the turn; the holder commits while others wait
    client = fakeredis.FakeRedis(max_connections=1)
    store = RedisDetectorStore(client, Keys("t"))
    early = store.load("early", _ids(1), 1, region="eu-west")
    assert store.take_turn("holder", "eu-west")
    held = store.load("holder", _ids(1), 1, region="eu-west")

    def holder_commits_meanwhile(_seconds: float) -> None:
        if store.screen_counters()["screened_readings"] == 0:
            assert store.commit(held, fresh_states(1) + 1.0, {}, readings=1, alerts=0)

    monkeypatch.setattr(detector_store.time, "sleep", holder_commits_meanwhile)
    # When the early batch commits, Then it waits for the holder, finds device 1 changed
    # under it and is refused, so it screens again from the holder's state
    assert not store.commit(early, fresh_states(1), {}, readings=1, alerts=0)
    assert store.screen_counters()["screen_collisions"] == 1
    assert store.take_turn("next", "eu-west")


def _registry_saved(client: fakeredis.FakeRedis, keys: Keys) -> int:
    """Store (or replace) the device registry, as ``iotsched registry load`` does."""
    return RedisStateStore(client, keys).save_registry(generate_registry(10, seed=1))


def test_a_load_with_a_stale_registry_version_raises() -> None:
    # Given a registry replaced once since a worker took its snapshot (version 1)
    client, keys = fakeredis.FakeRedis(), Keys("t")
    store = RedisDetectorStore(client, keys)
    old = _registry_saved(client, keys)
    new = _registry_saved(client, keys)
    # When the worker loads a batch with its stale snapshot's version
    # Then the load refuses: the snapshot's streams may not be the devices' own
    with pytest.raises(RegistryChanged):
        store.load("b1", _ids(1), 1, "eu", ("eu:standard",), registry_version=old)
    # And with the stored version (or none given) the batch loads
    loaded = store.load("b1", _ids(1), 1, "eu", ("eu:standard",), registry_version=new)
    assert loaded.states is not None
    assert store.load("b1", _ids(1), 1).states is not None


def test_a_registry_change_between_load_and_commit_refuses_the_commit() -> None:
    # Given a batch of device 1 loaded under registry version 1, where 1 is eu standard
    client, keys = fakeredis.FakeRedis(), Keys("t")
    store = RedisDetectorStore(client, keys)
    old = _registry_saved(client, keys)
    stale = store.load("a", _ids(1), 1, "eu", ("eu:standard",), registry_version=old)
    # And the registry replaced meanwhile (device 1 now us premium), and a batch screened
    # with the new registry committed device 1, counting in its new stream
    new = _registry_saved(client, keys)
    fresh = store.load("b", _ids(1), 1, "us", ("us:premium",), registry_version=new)
    theirs = fresh_states(1)
    theirs[0, 0] = 7.0
    assert store.commit(fresh, theirs, {}, readings=1, alerts=0)
    # When the first batch commits what it screened from the state before that
    refused = not store.commit(stale, fresh_states(1), {}, readings=1, alerts=0)
    # Then it is refused as a collision, and device 1 keeps the new batch's state
    assert refused
    assert store.screen_counters()["screen_collisions"] == 1
    assert store.screen_counters()["screened_readings"] == 1
    again = store.load("a", _ids(1), 1, "us", ("us:premium",), registry_version=new)
    assert again.states is not None and again.states[0, 0] == 7.0


def test_a_registry_change_refuses_a_commit_even_over_unchanged_states() -> None:
    # Given a batch loaded under registry version 1
    client, keys = fakeredis.FakeRedis(), Keys("t")
    store = RedisDetectorStore(client, keys)
    old = _registry_saved(client, keys)
    loaded = store.load("a", _ids(1, 2), 1, "eu", ("eu:standard",), registry_version=old)
    # When the registry is replaced and nothing else writes a state before its commit
    _registry_saved(client, keys)
    refused = not store.commit(loaded, fresh_states(2), {}, readings=2, alerts=0)
    # Then the commit is still refused (a collision): its streams came from the old registry
    assert refused
    assert store.screen_counters() == {
        "screened_readings": 0,
        "device_alerts": 0,
        "screen_duplicates": 0,
        "screen_collisions": 1,
    }
    # And loading again with the old snapshot says why
    with pytest.raises(RegistryChanged):
        store.load("a", _ids(1, 2), 1, "eu", ("eu:standard",), registry_version=old)
