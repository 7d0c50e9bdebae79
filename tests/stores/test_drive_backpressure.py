"""Given a gateway driving the producer, backpressure holds readings without losing any."""

from __future__ import annotations

import time

import numpy as np

from ingest.producer import Producer
from ingest.synthetic import SyntheticStream
from iotsched.loadrun import drive
from scheduler.model import Batch
from scheduler.registry import generate_registry
from stores.memory_state import MemoryStateStore


class Recorder:
    def __init__(self) -> None:
        self.batches: list[tuple[float, Batch]] = []

    def publish(self, batch: Batch) -> None:
        self.batches.append((time.time(), batch))


def test_held_readings_are_offered_again_until_taken_while_premium_flows() -> None:
    # Given eu-west closed for its first 0.3 s
    reg = generate_registry(5_000, seed=8)
    store = MemoryStateStore()
    pub = Recorder()
    opened_at = time.time() + 0.3

    def gate() -> np.ndarray:
        return np.array([time.time() < opened_at, False, False])

    producer = Producer(lambda: reg, pub, store, backlog_gate=gate)
    # When 40,000 readings are offered at 100,000 readings/s
    result = drive(producer, SyntheticStream(reg, seed=1), 40_000, 100_000, chunk=2_000)
    # Then every reading was taken in the end, some only after being pushed back
    assert result.accepted == result.offered == 40_000
    assert result.pushed_back > 0
    assert sum(len(b) for _, b in pub.batches) == 40_000
    # And eu-west premium kept flowing while eu-west standard was held
    closed = [b for at, b in pub.batches if at < opened_at and b.region == "eu-west"]
    assert {b.tier for b in closed} == {"premium"}
    assert store.counters()["pushed_back"] == result.pushed_back
