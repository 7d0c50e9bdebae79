"""Given premium messages piling up in a region's queue, the producer sends that region's
premium readings in fewer, fuller batches, and every reading still goes out once."""

from __future__ import annotations

import fakeredis
import numpy as np
import redis

from ingest.premium_backlog import PremiumBacklog
from ingest.producer import Producer
from scheduler.model import Batch
from scheduler.premium_coalescing import PREMIUM_HOLD_QUEUED_MESSAGES, PREMIUM_MAX_HOLD_MS
from scheduler.registry import generate_registry
from stores.keys import Keys
from stores.memory_state import MemoryStateStore

NOW = 1_800_000_000.0
KEYS = Keys("t")


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


class Recorder:
    def __init__(self) -> None:
        self.batches: list[Batch] = []

    def publish(self, batch: Batch) -> None:
        self.batches.append(batch)

    def premium(self, region: str) -> list[int]:
        return [len(b) for b in self.batches if b.tier == "premium" and b.region == region]


def make(broker: redis.Redis):  # type: ignore[no-untyped-def]
    reg = generate_registry(10_000, seed=5)
    clock, pub = Clock(), Recorder()
    backlog = PremiumBacklog(broker, KEYS, reg.topology, clock=clock)
    producer = Producer(lambda: reg, pub, MemoryStateStore(), clock=clock, premium_backlog=backlog)
    return reg, clock, pub, producer


def premium_of(reg, region: str, n: int):  # type: ignore[no-untyped-def]
    code = reg.topology.region_code(region)
    ids = reg.device_id[(reg.tier == 0) & (reg.home_region == code)][:n]
    return ids, np.full(len(ids), NOW - 1), np.ones(len(ids))


def offer(producer: Producer, clock: Clock, cols, at_s: float) -> None:  # type: ignore[no-untyped-def]
    clock.now = NOW + at_s
    producer.ingest_columns(*cols, now_ts=clock.now)
    producer.poll(clock.now)


def test_premium_coalesces_behind_a_backed_up_queue_and_goes_out_when_it_drains() -> None:
    # Given eu-west's premium queue holding as many messages as the hold needs
    broker = fakeredis.FakeRedis()
    reg, clock, pub, producer = make(broker)
    broker.lpush(KEYS.broker_queue("eu-west.premium"), *[b"m"] * PREMIUM_HOLD_QUEUED_MESSAGES)
    # When eu-west's premium readings arrive in three calls, 20 ms apart
    for i in range(3):
        offer(producer, clock, premium_of(reg, "eu-west", 20 * (i + 1)), at_s=0.02 * i)
    # Then none is sent while the queue stays backed up
    clock.now = NOW + 0.06
    producer.poll(clock.now)
    assert pub.premium("eu-west") == []
    # When the worker takes the queued messages
    broker.delete(KEYS.broker_queue("eu-west.premium"))
    clock.now = NOW + 0.075
    producer.poll(clock.now)
    # Then every reading held goes out in one batch, before the longest hold
    assert pub.premium("eu-west") == [20 + 40 + 60]


def test_a_region_with_a_short_queue_sends_premium_at_its_age_limit() -> None:
    # Given us-east's premium queue holding one message fewer than the hold needs
    broker = fakeredis.FakeRedis()
    reg, clock, pub, producer = make(broker)
    short = [b"m"] * (PREMIUM_HOLD_QUEUED_MESSAGES - 1)
    broker.lpush(KEYS.broker_queue("us-east.premium"), *short)
    # When premium readings arrive in two calls 50 ms apart, each left 30 ms
    for at_s in (0.0, 0.05):
        offer(producer, clock, premium_of(reg, "us-east", 10), at_s=at_s)
        clock.now += 0.03
        producer.poll(clock.now)
    # Then each call's readings left on their own, at the age limit
    assert pub.premium("us-east") == [10, 10]


def test_held_premium_is_sent_by_the_longest_hold_however_long_the_queue() -> None:
    broker = fakeredis.FakeRedis()
    reg, clock, pub, producer = make(broker)
    broker.lpush(KEYS.broker_queue("ap-south.premium"), *[b"m"] * 50)
    offer(producer, clock, premium_of(reg, "ap-south", 30), at_s=0.0)
    clock.now = NOW + PREMIUM_MAX_HOLD_MS / 1e3 - 0.01
    producer.poll(clock.now)
    assert pub.premium("ap-south") == []
    # The producer's loop is told when to look again, not to spin
    assert producer.next_due_ts(clock.now) == clock.now + producer.premium_backlog.refresh_s  # type: ignore[union-attr]
    clock.now = NOW + PREMIUM_MAX_HOLD_MS / 1e3 + 0.001
    producer.poll(clock.now)
    assert pub.premium("ap-south") == [30]


def test_a_broker_that_does_not_answer_holds_nothing_back() -> None:
    # Given a broker that refuses every command
    server = fakeredis.FakeServer()
    server.connected = False
    broker = fakeredis.FakeRedis(server=server)
    reg, clock, pub, producer = make(broker)
    # When premium readings reach their age limit
    offer(producer, clock, premium_of(reg, "eu-west", 10), at_s=0.0)
    clock.now = NOW + 0.03
    producer.poll(clock.now)
    # Then they go out as without coalescing
    assert pub.premium("eu-west") == [10]
