"""Given overdue batches in the in-flight ledger, the reaper publishes again only those whose
queue is empty, reading the queue under the broker's key prefix."""

from __future__ import annotations

from typing import Any

import fakeredis

from runtime.publisher import Publisher
from stores.inflight import InflightLedger
from stores.keys import Keys
from stores.queue_depth_read import RedisQueueDepth
from workers.inflight_reaper import InflightReaper

KEYS = Keys("t-reaper")


class Sent:
    def __init__(self) -> None:
        self.queues: list[str] = []

    def send_task(self, name: str, args: Any, queue: str, **options: Any) -> None:
        self.queues.append(queue)


def test_a_waiting_queue_is_busy_and_an_empty_one_has_its_batches_published_again() -> None:
    client = fakeredis.FakeRedis()
    ledger = InflightLedger(client, KEYS)
    ledger.record("b-busy", "eu-west.standard", {"n": 1}, "iotsched.routine", now_ts=0.0)
    ledger.record("b-lost", "us-east.standard", {"n": 1}, "iotsched.routine", now_ts=0.0)
    # A message still waits in eu-west.standard, in a priority list under the prefix;
    # an unprefixed key of the same name (what a passive queue_declare would look at) is empty.
    client.lpush(KEYS.broker_queue_lists("eu-west.standard")[2], b"{}")
    app = Sent()

    publisher = Publisher(app, ledger)  # type: ignore[arg-type]
    depth = RedisQueueDepth(client, KEYS)
    republished = InflightReaper(publisher, ledger, depth, grace_s=1.0).reap_once()

    assert republished == 1 and app.queues == ["us-east.standard"]
