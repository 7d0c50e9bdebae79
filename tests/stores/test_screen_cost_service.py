"""Given workers timing their tasks, the producer's held-screening budget follows the
measured cost of screening a held reading against processing one."""

from __future__ import annotations

import time
from typing import Any

import fakeredis
import numpy as np
from runtime_doubles import MakeRuntime

from ingest.backlog_gate import QueueBacklogGate
from ingest.producer import Producer
from scheduler.codec import encode_batch
from scheduler.held_screening import PER_ADMITTED
from scheduler.model import Batch, Topology
from scheduler.registry import generate_registry
from scheduler.screen_cost import (
    SCREEN_HELD_READINGS,
    SCREEN_HELD_US,
    routine_readings,
    routine_us,
)
from scheduler.wire import HELD_SCREEN_FIELD
from stores.keys import Keys
from stores.memory_state import MemoryStateStore
from stores.queue_depth import QueueDepthReader
from tasks import routine
from tasks.screen import handle_screen

KEYS = Keys("t-cost")


def batch(batch_id: str, tier: str, ids: np.ndarray) -> Batch:
    now, n = time.time(), ids.size
    return Batch(batch_id, "eu-west", tier, ("value",), ids.astype(np.uint64),
                 np.full(n, now - 1), np.zeros((n, 1)), np.full(n, now))  # fmt: skip


def test_workers_record_the_service_of_held_copies_and_non_premium_routine_tasks(
    make_runtime: MakeRuntime,
) -> None:
    rt = make_runtime(fakeredis.FakeRedis(), key_prefix=KEYS.prefix)
    reg = generate_registry(100, seed=3)
    rt.stores.state.save_registry(reg)
    ids = reg.device_id[:20]
    # When a standard and a premium routine task run, and an admitted and a held copy
    # are screened
    routine.process_routine.apply(args=(encode_batch(batch("s1", "standard", ids)),)).get()
    routine.process_routine.apply(args=(encode_batch(batch("p1", "premium", ids)),)).get()
    handle_screen(rt, encode_batch(batch("s1+1", "standard", ids)))
    held: dict[str, Any] = {
        **encode_batch(batch("h1", "standard", ids[:10])),
        HELD_SCREEN_FIELD: True,
    }
    handle_screen(rt, held)
    # Then the standard task's and the held copy's readings and time were recorded, only
    counters = rt.stores.state.counters()
    assert counters[routine_readings("standard")] == 20 and counters[routine_us("standard")] > 0
    assert routine_readings("premium") not in counters
    assert counters[SCREEN_HELD_READINGS] == 10 and counters[SCREEN_HELD_US] > 0


class Sink:
    def publish(self, b: Batch) -> None:
        pass


def test_the_admission_gate_measures_the_ratio_and_the_producer_budget_follows_it() -> None:
    client = fakeredis.FakeRedis()
    keys = Keys("g")
    now = [0.0]
    gate = QueueBacklogGate(QueueDepthReader(client, keys), Topology(), clock=lambda: now[0])
    reg = generate_registry(1_000, seed=3)
    producer = Producer(
        lambda: reg,
        Sink(),
        MemoryStateStore(),
        backlog_gate=gate,
        screen_cost=lambda: gate.screen_cost_ratio,
    )
    standard = reg.device_id[reg.tier == 1][:100]

    def offer() -> None:
        producer.ingest_columns(standard, np.full(100, time.time() - 1), np.zeros(100))

    # Given nothing measured yet: the budget earns at its 1:1 prior
    offer()
    assert gate.screen_cost_ratio is None
    assert producer.held_screener.budget.per_admitted == PER_ADMITTED
    # When workers report a second of held screening at 12 us a reading and a second of
    # standard routine processing at 4 us a reading
    client.hset(keys.counters, mapping={
        SCREEN_HELD_US: 1_000_000, SCREEN_HELD_READINGS: 83_333,
        routine_us("standard"): 1_000_000, routine_readings("standard"): 250_000,
    })  # fmt: skip
    now[0] += 0.25
    offer()
    # Then the gate measures screening at 3x and admissions earn a third as much each
    assert gate.screen_cost_ratio is not None and abs(gate.screen_cost_ratio - 3.0) < 0.01
    assert abs(producer.held_screener.budget.per_admitted - PER_ADMITTED / 3) < 0.01
