"""One contract, two stores: Redis (on fakeredis) and in-memory behave the same."""

from __future__ import annotations

from collections.abc import Iterator

import fakeredis
import numpy as np
import pytest

from scheduler.model import DeadLetter
from scheduler.registry import generate_registry
from scheduler.rollup import compute_rollups
from stores.keys import Keys
from stores.memory_state import MemoryStateStore
from stores.protocols import StateStore
from stores.redis_state import RedisStateStore


@pytest.fixture(params=["redis", "memory"])
def store(request: pytest.FixtureRequest) -> Iterator[StateStore]:
    if request.param == "redis":
        yield RedisStateStore(fakeredis.FakeRedis(), Keys("contract"))
    else:
        yield MemoryStateStore()


def delta(devices: list[int], ts: list[float], values: list[float]):  # type: ignore[no-untyped-def]
    return compute_rollups(
        np.array(devices, dtype=np.uint64), np.array(ts), np.array(values)[:, None]
    )


def test_a_batch_is_applied_once_even_when_delivered_twice(store: StateStore) -> None:
    d = delta([1, 1, 2], [60.0, 70.0, 61.0], [1.0, 3.0, 5.0])
    lat = {"ingest": {10: 3}}
    assert store.apply_batch("b1", "premium", d, lat, 3) is True
    assert store.apply_batch("b1", "premium", d, lat, 3) is False
    r = store.rollup(1, 60, 1)
    assert r is not None and (r.count, r.sum, r.min, r.max, r.last) == (
        2,
        (4.0,),
        (1.0,),
        (3.0,),
        (3.0,),
    )
    c = store.counters()
    assert c["processed:premium"] == 3 and c["duplicate_deliveries"] == 1
    assert store.latency_histogram("ingest", "premium") == {10: 3}
    assert store.rollup_count_total() == 3


def test_rollups_of_later_batches_merge_with_earlier_ones(store: StateStore) -> None:
    store.apply_batch("a", "standard", delta([7], [130.0], [2.0]), {}, 1)
    store.apply_batch("b", "standard", delta([7, 7], [125.0, 179.0], [-4.0, 9.0]), {}, 2)
    r = store.rollup(7, 120, 1)
    assert r is not None
    assert (r.count, r.sum, r.min, r.max, r.last, r.last_ts) == (
        3,
        (7.0,),
        (-4.0,),
        (9.0,),
        (9.0,),
        179.0,
    )
    assert store.rollup(7, 60, 1) is None
    assert store.rollup(8, 120, 1) is None


def test_dead_letters_keep_reason_payload_and_count_readings(store: StateStore) -> None:
    store.add_dead_letters(
        [
            DeadLetter("not_finite", "NaN", b'{"x": NaN}', "ingest", 5.0),
            DeadLetter("retries_exhausted", "boom", b"\x90", "iotsched.routine", 6.0, 500),
        ]
    )
    letters = store.dead_letters(10)
    assert [(d.reason, d.payload, d.readings) for d in letters] == [
        ("not_finite", b'{"x": NaN}', 1),
        ("retries_exhausted", b"\x90", 500),
    ]
    assert store.counters()["dead_lettered"] == 501


def test_registry_versions_increase_and_snapshots_round_trip(store: StateStore) -> None:
    assert store.registry_version() == 0 and store.load_registry() is None
    reg = generate_registry(500, seed=4)
    v1 = store.save_registry(reg)
    v2 = store.save_registry(reg)
    loaded = store.load_registry()
    assert v2 == v1 + 1 == store.registry_version()
    assert loaded is not None and loaded.version == v2
    assert np.array_equal(loaded.allowed_mask, reg.allowed_mask)
    assert loaded.topology == reg.topology


def test_counters_add_up(store: StateStore) -> None:
    store.incr_counters({"ingested": 5, "accepted": 4})
    store.incr_counters({"ingested": 1, "accepted": 0})
    c = store.counters()
    assert (c["ingested"], c["accepted"]) == (6, 4)


def test_the_redis_store_owns_only_its_prefix() -> None:
    client = fakeredis.FakeRedis()
    client.set("someone-else", 1)
    store = RedisStateStore(client, Keys("mine"))
    store.apply_batch("b", "premium", delta([1], [1.0], [1.0]), {"ingest": {1: 1}}, 1)
    store.incr_counters({"ingested": 1})
    assert store.delete_all() > 0
    assert client.keys("*") == [b"someone-else"]
