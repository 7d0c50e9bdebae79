"""The in-flight ledger's record rides the publish's round trip when both live in one Redis,
and then a large standard batch travels as a claim check.

Given a producer's publisher whose ledger is on the broker's server, a flush of routine
batches records them and publishes them in one round trip, the ledger's commands first
(against a private redis-server, every command it receives watched with MONITOR); on a
ledger elsewhere (another database) the record takes a round trip of its own, first.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections.abc import Iterator

import msgpack
import numpy as np
import pytest
import redis

from runtime.publisher import Publisher
from scheduler.codec import decode_batch
from scheduler.model import Batch, queue_name
from scheduler.wire import LEDGER_REF_FIELD
from stores.inflight import InflightLedger
from stores.keys import Keys
from stores.queue_scan import QueueScan, decode_routine
from tasks.app import broker_app

pytestmark = pytest.mark.integration


def batch(i: int, region: str = "eu-west", tier: str = "standard", n: int = 50) -> Batch:
    ids = np.arange(n, dtype=np.uint64) + np.uint64(1_000 * i)
    now = time.time()
    return Batch(
        f"b{i}", region, tier, ("v",), ids, np.full(n, now), np.ones((n, 1)), np.full(n, now)
    )


class Monitor:
    """The commands the server receives meanwhile from the connections that touch keys of
    ``prefix`` (the server is shared with other tests), in order, as (client, name)."""

    def __init__(self, url: str, prefix: str) -> None:
        self._client = redis.Redis.from_url(url)
        self._prefix = prefix
        self._sentinel = f"monitor-done-{uuid.uuid4().hex}"
        self.commands: list[tuple[str, str, str]] = []
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(10)

    def _run(self) -> None:
        with self._client.monitor() as m:
            self._ready.set()
            for event in m.listen():
                text = event["command"]
                if self._sentinel in text:
                    return  # every command sent before it was seen, in order
                client = f"{event['client_address']}:{event.get('client_port')}"
                self.commands.append((client, text.split(" ")[0].upper(), text))

    def stop(self) -> list[tuple[str, str]]:
        self._client.echo(self._sentinel)
        self._thread.join(timeout=30)
        assert not self._thread.is_alive()
        ours = {client for client, _, text in self.commands if self._prefix in text}
        return [(client, name) for client, name, _ in self.commands if client in ours]


@pytest.fixture
def keys(key_prefix: str) -> Iterator[Keys]:
    yield Keys(key_prefix)


def test_the_record_and_the_messages_go_in_one_round_trip_ledger_first(
    redis_server: str, keys: Keys
) -> None:
    # Given a publisher whose ledger is on the broker's own server and database
    client = redis.Redis.from_url(redis_server)
    ledger = InflightLedger(client, keys)
    app = broker_app(redis_server, keys)
    publisher = Publisher(app, ledger)
    sent = [batch(1), batch(2, region="us-east"), batch(3, tier="premium")]
    # (connections opened and queues declared before watching)
    publisher.send_routine([batch(10 + i, b.region, b.tier) for i, b in enumerate(sent)])
    monitor = Monitor(redis_server, keys.prefix)
    # When three batches of two regions and two tiers are flushed together
    publisher.send_routine(sent)
    commands = monitor.stop()
    # Then the ledger's record and the three messages came over one connection, the
    # record first, and nothing else was sent
    assert [name for _, name in commands] == ["HSET", "ZADD", "LPUSH", "LPUSH", "LPUSH"]
    assert len({address for address, _ in commands}) == 1
    # And each batch is in the ledger under its own key (not the broker's prefix), and
    # in its queue
    for b in sent:
        recorded = ledger.payload(b.batch_id)
        assert recorded is not None and decode_batch(recorded).batch_id == b.batch_id
        assert client.zscore(keys.inflight_since, b.batch_id) is not None
        queue = queue_name(b.region, b.tier)
        assert sum(client.llen(k) for k in keys.broker_queue_lists(queue)) == 2


def test_a_ledger_on_another_database_is_recorded_first_in_a_round_trip_of_its_own(
    redis_server: str, keys: Keys
) -> None:
    # Given a publisher whose ledger is in another database of the server
    other_db = redis_server.rsplit("/", 1)[0] + "/5"
    client = redis.Redis.from_url(other_db)
    ledger = InflightLedger(client, keys)
    publisher = Publisher(broker_app(redis_server, keys), ledger)
    publisher.send_routine([batch(0)])  # (connections opened, queue declared)
    monitor = Monitor(redis_server, keys.prefix)
    # When batches are flushed
    publisher.send_routine([batch(1), batch(2)])
    commands = monitor.stop()
    # Then the record went first, in a transaction of its own, then the messages
    names = [name for _, name in commands]
    assert names == ["SELECT", "MULTI", "HSET", "ZADD", "EXEC", "LPUSH", "LPUSH"] or names == [
        "MULTI",
        "HSET",
        "ZADD",
        "EXEC",
        "LPUSH",
        "LPUSH",
    ]
    assert ledger.payload("b1") is not None and ledger.payload("b2") is not None
    assert redis.Redis.from_url(redis_server).hget(keys.inflight, "b1") is None


def test_large_standard_batches_go_as_claim_checks_the_queue_scan_reads_through(
    redis_server: str, keys: Keys
) -> None:
    # Given a publisher whose ledger is on the broker's own server and database
    client = redis.Redis.from_url(redis_server)
    ledger = InflightLedger(client, keys)
    publisher = Publisher(broker_app(redis_server, keys), ledger)
    sent = [batch(1, n=2_000), batch(2, tier="premium", n=2_000), batch(3, n=50)]
    # When a large standard batch, a large premium one and a small standard one are sent
    publisher.send_routine(sent)
    # Then only the large standard batch's message is a claim check, without columns
    raw = [
        decode_routine(m)
        for kind in ("standard", "premium")
        for name in keys.broker_queue_lists(queue_name("eu-west", kind))
        for m in client.lrange(name, 0, -1)
    ]
    by_id = {p["id"]: p for p in raw if p is not None}
    assert by_id["b1"][LEDGER_REF_FIELD] is True and "device_id" not in by_id["b1"]
    assert by_id["b1"]["n"] == 2_000
    assert all(LEDGER_REF_FIELD not in by_id[b] and "device_id" in by_id[b] for b in ("b2", "b3"))
    # And the queue scan (acceleration's look at waiting data) reads every batch whole
    found = QueueScan(client, keys).routine_payloads("eu-west")
    assert sorted(p["id"] for p in found.payloads) == ["b1", "b2", "b3"]
    for payload in found.payloads:
        want = next(b for b in sent if b.batch_id == payload["id"])
        np.testing.assert_array_equal(decode_batch(payload).device_id, want.device_id)
    # And a large admitted screening copy goes as a claim check as well
    publisher.send_screens([(batch(5, n=2_000), "eu-west.screen", False)])
    (screen,) = [
        m for name in keys.broker_queue_lists("eu-west.screen") for m in client.lrange(name, 0, -1)
    ]
    args = msgpack.unpackb(base64.b64decode(json.loads(screen)["body"]), raw=False)[0]
    assert args[0][LEDGER_REF_FIELD] is True and "device_id" not in args[0]
    # When the claim check's batch settles, the scan leaves it out
    ledger.done("b1")
    assert sorted(
        p["id"] for p in QueueScan(client, keys).routine_payloads("eu-west").payloads
    ) == [
        "b2",
        "b3",
    ]


def test_a_ledger_elsewhere_gets_large_standard_batches_whole(
    redis_server: str, keys: Keys
) -> None:
    # Given a publisher whose ledger is in another database than the broker
    other_db = redis_server.rsplit("/", 1)[0] + "/5"
    publisher = Publisher(
        broker_app(redis_server, keys), InflightLedger(redis.Redis.from_url(other_db), keys)
    )
    # When a large standard batch is sent
    publisher.send_routine([batch(4, n=2_000)])
    # Then its message carries its columns: a worker must not need the ledger to read it
    client = redis.Redis.from_url(redis_server)
    (message,) = [
        m
        for name in keys.broker_queue_lists("eu-west.standard")
        for m in client.lrange(name, 0, -1)
    ]
    payload = decode_routine(message)
    assert payload is not None and LEDGER_REF_FIELD not in payload and payload["n"] == 2_000
