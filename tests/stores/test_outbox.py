"""Given a broker that goes away, the producer keeps what it accepted and replays it later."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import redis

from ingest.memory_gate import MemoryGate
from ingest.outbox import MemoryOutbox, SpoolOutbox
from ingest.producer import Producer
from ingest.unconfirmed import UnconfirmedWindow
from scheduler.batching import BatchingConfig
from scheduler.model import Batch
from scheduler.registry import generate_registry
from stores.memory_state import MemoryStateStore

NOW = 1_800_000_000.0


def batch(i: int, n: int = 3) -> Batch:
    return Batch(
        batch_id=f"p:eu-west:premium:{i}",
        region="eu-west",
        tier="premium",
        metrics=("value",),
        device_id=np.arange(n, dtype=np.uint64) + i,
        ts=np.full(n, NOW),
        values=np.full((n, 1), float(i)),
        ingest_ts=np.full(n, NOW),
    )


def ids(batches: list[Batch]) -> list[str]:
    return [b.batch_id for b in batches]


def reopened(path: Path) -> list[str]:
    spool = SpoolOutbox(path)
    try:
        return ids(spool.peek(100))
    finally:
        spool.close()


def test_spool_survives_reopening_and_resumes_after_what_was_released(tmp_path: Path) -> None:
    spool = SpoolOutbox(tmp_path)
    spool.append([batch(1), batch(2)])
    spool.append([batch(3)])
    spool.release(1)
    spool.close()

    again = SpoolOutbox(tmp_path)
    assert ids(again.peek(10)) == ids([batch(2), batch(3)])
    assert again.held_readings == 6
    np.testing.assert_array_equal(again.peek(1)[0].values, batch(2).values)
    again.append([batch(4)])
    again.release(2)
    again.close()
    assert reopened(tmp_path) == ids([batch(4)])


def test_a_torn_record_at_the_tail_is_cut_off_and_appends_continue(tmp_path: Path) -> None:
    spool = SpoolOutbox(tmp_path)
    spool.append([batch(1)])
    spool.close()
    segment = next(tmp_path.glob("*.spool"))
    with open(segment, "ab") as f:
        f.write(b"\x40\x00\x00\x00garbage")  # a crash mid-append

    again = SpoolOutbox(tmp_path)
    assert ids(again.peek(10)) == ids([batch(1)])
    again.append([batch(2)])
    again.close()
    assert reopened(tmp_path) == ids([batch(1), batch(2)])


def test_releasing_everything_leaves_nothing_to_replay(tmp_path: Path) -> None:
    spool = SpoolOutbox(tmp_path)
    spool.append([batch(1), batch(2)])
    spool.release(2)
    spool.close()
    again = SpoolOutbox(tmp_path)
    assert len(again) == 0 and again.held_readings == 0
    again.append([batch(3)])
    again.close()
    assert reopened(tmp_path) == ids([batch(3)])


class FlakyBroker:
    """Publishes while up; raises a connection error while down (part of a group may go out)."""

    def __init__(self) -> None:
        self.up = True
        self.sent: list[Batch] = []

    def publish_many(self, batches: list[Batch]) -> None:
        for b in batches:
            if not self.up:
                raise redis.ConnectionError("Connection refused")
            self.sent.append(b)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def make(outbox_max_readings: int = 1_000_000, store: MemoryStateStore | None = None):  # type: ignore[no-untyped-def]
    reg = generate_registry(2_000, seed=3)
    broker = FlakyBroker()
    clock = Clock()
    producer = Producer(
        lambda: reg,
        broker,
        store or MemoryStateStore(),
        batching=BatchingConfig(max_readings=100),
        clock=clock,
        outbox=MemoryOutbox(),
        outbox_max_readings=outbox_max_readings,
        retry_s=1.0,
    )
    return reg, broker, clock, producer


def offer(producer: Producer, reg, clock: Clock, n: int, start: int):  # type: ignore[no-untyped-def]
    dev = reg.device_id[np.arange(start, start + n) % len(reg)]
    return producer.ingest_columns(dev, np.full(n, clock.now - 1), np.arange(start, start + n))


def test_an_outage_never_reaches_the_gateway_and_every_accepted_reading_is_published_once() -> None:
    reg, broker, clock, producer = make()
    first = offer(producer, reg, clock, 500, 0)
    broker.up = False
    during = [offer(producer, reg, clock, 500, 500 * k) for k in range(1, 4)]
    clock.now += 0.5
    producer.poll()

    assert first.accepted == 500 and all(r.accepted == 500 and not r.pushed_back for r in during)
    assert producer.outbox_held > 0

    broker.up = True
    clock.now += 1.0
    producer.poll()
    producer.flush()
    assert producer.outbox_held == 0
    values = np.concatenate([b.values[:, 0] for b in broker.sent])
    # A group that failed half-way is replayed whole: same batch ids, applied once by claims.
    unique = {b.batch_id: b for b in broker.sent}
    got = np.sort(np.concatenate([b.values[:, 0] for b in unique.values()]))
    np.testing.assert_array_equal(got, np.arange(2_000, dtype=float))
    assert values.size >= 2_000


def test_batches_are_replayed_in_the_order_they_were_handed_over() -> None:
    # Given the same offers once to a healthy broker and once through an outage,
    healthy_reg, healthy, healthy_clock, healthy_producer = make()
    for k in range(5):
        offer(healthy_producer, healthy_reg, healthy_clock, 300, 300 * k)
    healthy_clock.now += 2.0
    healthy_producer.flush()

    reg, broker, clock, producer = make()
    broker.up = False
    for k in range(5):
        offer(producer, reg, clock, 300, 300 * k)
    broker.up = True
    clock.now += 2.0
    producer.flush()

    # the outbox hands the broker the batches in the order a healthy broker got them.
    assert [b.batch_id for b in broker.sent] == [b.batch_id for b in healthy.sent]


def test_past_the_outbox_bound_ingest_pushes_back_exactly_what_it_did_not_take() -> None:
    reg, broker, clock, producer = make(outbox_max_readings=700)
    broker.up = False
    offer(producer, reg, clock, 500, 0)
    producer.flush()  # the broker is away: all 500 go to the outbox
    res = offer(producer, reg, clock, 500, 500)

    assert res.accepted == 200 and res.pushed_back == 300
    np.testing.assert_array_equal(res.pushed_back_index, np.arange(200, 500))
    broker.up = True
    clock.now += 2.0
    producer.flush()
    again = offer(producer, reg, clock, 300, 700)
    assert again.accepted == 300


class DownStore(MemoryStateStore):
    def __init__(self) -> None:
        super().__init__()
        self.up = False

    def add_dead_letters(self, letters):  # type: ignore[no-untyped-def]
        if not self.up:
            raise redis.TimeoutError("Timeout reading from socket")
        super().add_dead_letters(letters)

    def incr_counters(self, counts):  # type: ignore[no-untyped-def]
        if not self.up:
            raise redis.TimeoutError("Timeout reading from socket")
        super().incr_counters(counts)


def test_a_store_outage_keeps_dead_letters_and_counters_until_it_answers() -> None:
    store = DownStore()
    reg, _broker, clock, producer = make(store=store)
    good = {"device_id": int(reg.device_id[0]), "ts": clock.now, "value": 1.0}
    res = producer.ingest([good, b"{broken"])
    producer.flush()
    assert (res.accepted, res.rejected) == (1, 1)
    assert store.dead_letters() == []

    store.up = True
    producer.flush()
    assert [dl.reason for dl in store.dead_letters()] == ["malformed"]
    assert store.counters()["ingested"] == 2


def test_a_closed_pause_gate_pushes_back_every_new_reading() -> None:
    reg, _broker, clock, producer = make()
    producer.admission.pause_gate = lambda: True
    res = offer(producer, reg, clock, 50, 0)
    assert (res.accepted, res.pushed_back) == (0, 50)
    producer.admission.pause_gate = lambda: False
    assert offer(producer, reg, clock, 50, 0).accepted == 50


@pytest.mark.parametrize("n", [1, 7])
def test_memory_outbox_keeps_order_and_count(n: int) -> None:
    box = MemoryOutbox()
    box.append([batch(i, n) for i in range(4)])
    box.release(1)
    assert ids(box.peek(2)) == ids([batch(1), batch(2)])
    assert box.held_readings == 3 * n


class FakeInfo:
    def __init__(self, used: int, limit: int) -> None:
        self.used, self.limit = used, limit

    def info(self, section: str) -> dict[str, int]:
        assert section == "memory"
        return {"used_memory": self.used, "maxmemory": self.limit}


def test_the_memory_gate_closes_near_maxmemory_and_opens_when_it_is_raised() -> None:
    client = FakeInfo(used=90, limit=100)
    clock = Clock()
    gate = MemoryGate(client, high_water=0.85, refresh_s=1.0, clock=clock)
    assert gate() is True
    client.limit = 1_000
    assert gate() is True  # read at most once per refresh_s
    clock.now += 1.0
    assert gate() is False
    assert MemoryGate(FakeInfo(used=10**9, limit=0))() is False  # no limit configured


def test_after_a_redis_restart_unconfirmed_batches_are_handed_over_again() -> None:
    server = {"run_id": "a"}
    window = UnconfirmedWindow(lambda: server["run_id"], fsync_lag_s=3.0, check_s=0.5)
    assert window.check(NOW) == []
    window.sent([batch(1)], NOW)
    window.sent([batch(2)], NOW + 3.0)
    assert window.check(NOW + 3.5) == []  # batch 1 is on disk: forgotten
    server["run_id"] = "b"  # killed and restarted
    assert ids(window.check(NOW + 4.0)) == ids([batch(2)])
    assert window.readings == 0 and window.restarts_seen == 1
