"""Every dead letter says what was wrong and keeps what was sent, byte for byte."""

from __future__ import annotations

import fakeredis
import numpy as np

from ingest.producer import Producer
from scheduler.model import Batch, DeadLetter
from scheduler.registry import generate_registry
from stores.dead_letter_stream import DeadLetterStream
from stores.keys import Keys
from stores.memory_state import MemoryStateStore
from stores.redis_state import RedisStateStore

NOW = 1_800_000_000.0


class Recorder:
    def __init__(self) -> None:
        self.batches: list[Batch] = []

    def publish(self, batch: Batch) -> None:
        self.batches.append(batch)


def _producer() -> tuple[MemoryStateStore, Producer]:
    reg = generate_registry(1_000, seed=5)
    store = MemoryStateStore()
    return store, Producer(lambda: reg, Recorder(), store, clock=lambda: NOW)


def test_unknown_device_names_the_id_and_keeps_the_original_bytes() -> None:
    store, producer = _producer()
    sent = b'{"ts": 1800000000,   "value": 2.5, "device_id": 77777}'
    result = producer.ingest([sent])
    assert result.reasons == {"unknown_device": 1}
    (letter,) = store.dead_letters()
    assert letter.detail == "device 77777 is not in the registry"
    assert letter.payload == sent


def test_columnar_rejections_carry_a_detail_per_reason() -> None:
    store, producer = _producer()
    producer.ingest_columns(
        np.array([1, 99_999, 2, 3], dtype=np.uint64),
        np.array([NOW, NOW, NOW + 3_600, NOW]),
        np.array([1.0, 1.0, 1.0, np.nan]),
    )
    details = {d.reason: d.detail for d in store.dead_letters()}
    assert details["unknown_device"] == "device 99999 is not in the registry"
    assert details["ts_future"].startswith("ts 1800003600.0 is ahead of ingest clock")
    assert details["not_finite"] == "NaN or infinite value"
    assert store.counters()["dead_lettered:unknown_device"] == 1


def test_stream_lists_newest_filters_by_reason_and_purges_by_time() -> None:
    client = fakeredis.FakeRedis()
    keys = Keys("d")
    store = RedisStateStore(client, keys)
    store.add_dead_letters(
        [
            DeadLetter("malformed" if i % 2 else "ts_past", str(i), b"x", "ingest", NOW)
            for i in range(7)
        ]
    )
    stream = DeadLetterStream(client, keys)
    newest = stream.latest(2, reason="malformed")
    assert [s.letter.detail for s in newest] == ["3", "5"]
    assert stream.get(newest[0].letter_id) == newest[0]
    assert [s.letter.detail for s in stream.scan("ts_past")] == ["0", "2", "4", "6"]
    assert stream.purge(before_ts=0.0) == 0
    assert stream.purge(before_ts=4_000_000_000.0) == 7
    assert store.counters()["dead_letters_purged"] == 7
    assert store.counters()["dead_lettered"] == 7  # they were dead-lettered; purge only drops
