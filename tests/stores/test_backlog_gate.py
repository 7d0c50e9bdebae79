"""Given queue depths in Redis, the backlog gate closes exactly the regions past their cap."""

from __future__ import annotations

import fakeredis

from ingest.backlog_gate import QueueBacklogGate
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
