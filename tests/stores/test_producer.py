"""Given a producer, good readings reach their queues in batches; bad ones are dead-lettered."""

from __future__ import annotations

import json

import numpy as np

from ingest.producer import Producer
from scheduler.batching import BatchingConfig
from scheduler.model import Batch
from scheduler.registry import generate_registry
from stores.memory_state import MemoryStateStore

NOW = 1_800_000_000.0


class Recorder:
    def __init__(self) -> None:
        self.batches: list[Batch] = []

    def publish(self, batch: Batch) -> None:
        self.batches.append(batch)


def make(max_readings: int = 5_000):  # type: ignore[no-untyped-def]
    reg = generate_registry(10_000, seed=5)
    store = MemoryStateStore()
    pub = Recorder()
    producer = Producer(
        lambda: reg,
        pub,
        store,
        batching=BatchingConfig(max_readings=max_readings),
        clock=lambda: NOW,
    )
    return reg, store, pub, producer


def test_readings_are_routed_by_their_devices_tier_and_home_region() -> None:
    reg, _store, pub, producer = make()
    ids = reg.device_id[::7]
    producer.ingest_columns(ids, np.full(len(ids), NOW - 1), np.ones(len(ids)))
    producer.flush()
    assert sum(len(b) for b in pub.batches) == len(ids)
    for b in pub.batches:
        rows = reg.lookup(b.device_id)
        assert set(reg.tier[rows].tolist()) == {reg.topology.tier_code(b.tier)}
        assert set(reg.home_region[rows].tolist()) == {reg.topology.region_code(b.region)}


def test_bad_readings_are_dead_lettered_and_never_sink_the_good_ones() -> None:
    reg, store, pub, producer = make()
    good = {"device_id": int(reg.device_id[0]), "ts": NOW, "value": 1.5}
    raw = [
        json.dumps(good).encode(),
        b"{broken",
        {**good, "value": float("nan")},
        {**good, "device_id": 99_999_999},
        {**good, "extra": 1},
        good,
    ]
    result = producer.ingest(raw)
    producer.flush()
    assert (result.accepted, result.rejected) == (2, 4)
    assert result.reasons == {
        "malformed": 1,
        "not_finite": 1,
        "unknown_device": 1,
        "extra_field": 1,
    }
    assert sum(len(b) for b in pub.batches) == 2
    letters = store.dead_letters()
    assert {d.reason for d in letters} == set(result.reasons)
    assert b"{broken" in [d.payload for d in letters]
    c = store.counters()
    assert (c["ingested"], c["accepted"], c["dead_lettered"]) == (6, 2, 4)


def test_full_batches_publish_at_once_and_the_rest_on_age() -> None:
    reg, _store, pub, producer = make(max_readings=100)
    premium = reg.device_id[(reg.tier == 0) & (reg.home_region == 0)][:250]
    producer.ingest_columns(premium, np.full(250, NOW), np.ones(250), now_ts=NOW)
    assert [len(b) for b in pub.batches] == [100, 100]
    producer.poll(NOW + 0.026)
    assert [len(b) for b in pub.batches] == [100, 100, 50]


def test_past_the_backlog_cap_standard_is_pushed_back_and_premium_still_taken() -> None:
    # Given eu-west's backlog is past its cap
    reg = generate_registry(10_000, seed=5)
    store = MemoryStateStore()
    pub = Recorder()
    closed = np.array([True, False, False])
    producer = Producer(lambda: reg, pub, store, clock=lambda: NOW, backlog_gate=lambda: closed)
    # When readings of every region and tier arrive, singly and as columns
    ids = reg.device_id[:3_000]
    result = producer.ingest_columns(ids, np.full(3_000, NOW), np.ones(3_000))
    singles = [{"device_id": int(d), "ts": NOW, "value": 1.0} for d in reg.device_id[:50]]
    single_result = producer.ingest(singles)
    producer.flush()
    # Then exactly eu-west's standard readings come back to the caller, the rest is taken
    rows = reg.lookup(ids)
    held = (reg.home_region[rows] == 0) & (reg.tier[rows] == 1)
    assert result.pushed_back_index.tolist() == np.flatnonzero(held).tolist()
    assert result.accepted == 3_000 - int(held.sum())
    assert single_result.pushed_back_index.tolist() == np.flatnonzero(held[:50]).tolist()
    taken = np.concatenate([b.device_id for b in pub.batches])
    assert not set(taken.tolist()) & set(ids[held].tolist())
    assert {b.region for b in pub.batches if b.tier == "premium"} >= {"eu-west"}
    # And they are neither ingested nor dead-lettered: nothing was dropped
    c = store.counters()
    assert c["ingested"] == c["accepted"] == 3_050 - int(held.sum()) - int(held[:50].sum())
    assert c["pushed_back"] == int(held.sum()) + int(held[:50].sum())
    assert c.get("dead_lettered", 0) == 0
