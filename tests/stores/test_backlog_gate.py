"""Given queue depths in Redis, the backlog gate closes exactly the regions past their cap."""

from __future__ import annotations

import fakeredis

from ingest.backlog_gate import QueueBacklogGate
from scheduler.held_screening import HeldScreenBudget
from scheduler.model import Topology
from stores.keys import Keys
from stores.queue_depth import QueueDepthReader


def test_a_region_closes_past_its_cap_and_reopens_when_drained() -> None:
    client = fakeredis.FakeRedis()
    keys = Keys("g")
    now = [0.0]
    gate = QueueBacklogGate(
        QueueDepthReader(client, keys), Topology(), cap_readings=12_000, clock=lambda: now[0]
    )
    # Given 1,000-reading batches have been processed (so a message's size is known)
    client.hset(keys.counters, mapping={"processed:standard": 10_000, "batches:standard": 10})
    # When us-east.standard holds 13 messages and eu-west.standard 5
    for _ in range(13):
        client.rpush(keys.broker_queue("us-east.standard"), b"m")
    for _ in range(5):
        client.rpush(keys.broker_queue("eu-west.standard"), b"m")
    # Then only us-east is closed
    assert gate().tolist() == [False, True, False]
    # And after it drains, the gate reopens at its next refresh, not before
    client.delete(keys.broker_queue("us-east.standard"))
    assert gate().tolist() == [False, True, False]
    now[0] += 0.25
    assert gate().tolist() == [False, False, False]


def test_premium_queues_never_close_the_gate() -> None:
    client = fakeredis.FakeRedis()
    keys = Keys("g")
    gate = QueueBacklogGate(QueueDepthReader(client, keys), Topology(), cap_readings=1)
    for _ in range(50):
        client.rpush(keys.broker_queue("eu-west.premium"), b"m")
    assert gate().tolist() == [False, False, False]


def test_by_default_a_region_closes_when_its_backlog_outlasts_the_wait_budget() -> None:
    client = fakeredis.FakeRedis()
    keys = Keys("g")
    now = [0.0]
    gate = QueueBacklogGate(QueueDepthReader(client, keys), Topology(), clock=lambda: now[0])
    # Given workers have drained 30,000 standard readings/s fleet-wide
    client.hset(keys.counters, mapping={"processed:standard": 1_000, "batches:standard": 1})
    assert gate().tolist() == [False, False, False]  # nothing measured, nothing waiting
    now[0] += 0.5
    client.hset(keys.counters, "processed:standard", 1_000 + 15_000)
    client.hset(keys.counters, "batches:standard", 16)
    # When us-east holds 35 batches of 1,000 readings and eu-west 10: with two regions
    # waiting each is taken to drain 15,000 readings/s, so 2.3 s and 0.7 s of work
    for _ in range(35):
        client.rpush(keys.broker_queue("us-east.standard"), b"m" * 10)
    for _ in range(10):
        client.rpush(keys.broker_queue("eu-west.standard"), b"m")
    # Then only the region whose wait exceeds the 2 s budget pushes back
    assert gate().tolist() == [False, True, False]
    assert gate.drain_rps == 30_000


def test_a_region_loaded_alone_is_credited_with_the_whole_drain_rate() -> None:
    client = fakeredis.FakeRedis()
    keys = Keys("g")
    now = [0.0]
    gate = QueueBacklogGate(QueueDepthReader(client, keys), Topology(), clock=lambda: now[0])
    client.hset(keys.counters, mapping={"processed:standard": 0, "batches:standard": 0})
    gate()
    now[0] += 1.0
    client.hset(keys.counters, mapping={"processed:standard": 20_000, "batches:standard": 20})
    # When only ap-south has readings waiting: 30,000, 1.5 s at the fleet's 20,000/s
    for _ in range(30):
        client.rpush(keys.broker_queue("ap-south.standard"), b"m")
    # Then it stays open (it would close if the rate were split across all three regions)
    assert gate().tolist() == [False, False, False]


def test_a_backlog_with_no_measured_drain_pushes_back() -> None:
    client = fakeredis.FakeRedis()
    keys = Keys("g")
    now = [0.0]
    gate = QueueBacklogGate(QueueDepthReader(client, keys), Topology(), clock=lambda: now[0])
    client.hset(keys.counters, mapping={"processed:standard": 5_000, "batches:standard": 1})
    client.rpush(keys.broker_queue("ap-south.standard"), b"m")
    gate()
    # When a second passes and no standard reading is processed (workers stalled)
    now[0] += 1.0
    # Then the region with readings waiting is closed, the others stay open
    assert gate().tolist() == [False, False, True]


def test_a_fed_held_screening_budget_earns_from_the_measured_drain_while_closed() -> None:
    client = fakeredis.FakeRedis()
    keys = Keys("g")
    now = [0.0]
    gate = QueueBacklogGate(QueueDepthReader(client, keys), Topology(), clock=lambda: now[0])
    budget = gate.feed(HeldScreenBudget())
    # Given workers draining 30,000 standard readings/s fleet-wide while every region
    # holds far more than its wait budget (closed: nothing is admitted)
    client.hset(keys.counters, mapping={"processed:standard": 1_000, "batches:standard": 1})
    gate()
    for region in ("eu-west", "us-east", "ap-south"):
        for _ in range(100):
            client.rpush(keys.broker_queue(f"{region}.standard"), b"m")
    now[0] += 0.5
    client.hset(keys.counters, mapping={"processed:standard": 16_000, "batches:standard": 16})
    assert gate().all()
    # When held readings of eu-west arrive at its share of that drain for 10 s and are
    # all taken on by the sample
    for step in range(100):
        budget.spend(0, 1_000, now_ts=step * 0.1)
    # Then the sample keeps every device: the drain earned what admission could not
    assert budget.share(0) == 1.0
