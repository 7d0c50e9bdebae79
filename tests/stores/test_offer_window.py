"""Given readings offered inside a window, their latency counts until their batch is applied."""

from __future__ import annotations

import time
from types import SimpleNamespace

import fakeredis
import numpy as np

from bench.window import OfferWindow
from scheduler.model import Batch
from stores.keys import Keys


class Sink:
    def __init__(self) -> None:
        self.sent: list[Batch] = []

    def publish(self, batch: Batch) -> None:
        self.sent.append(batch)


class Stream:
    def chunk(self, n: int, now_ts: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return np.zeros(n, dtype=np.uint64), np.full(n, now_ts), np.zeros((n, 1))


def batch(batch_id: str, tier: str, offered_ts: list[float]) -> Batch:
    n = len(offered_ts)
    return Batch(
        batch_id, "eu-west", tier, ("value",), np.arange(n, dtype=np.uint64),
        np.zeros(n), np.zeros((n, 1)), np.array(offered_ts),
    )  # fmt: skip


def test_window_readings_count_from_first_offer_until_their_batch_leaves_the_ledger() -> None:
    client = fakeredis.FakeRedis()
    keys = Keys("w")
    run_ = SimpleNamespace(store=SimpleNamespace(client=client), keys=keys)
    now = time.time()
    window = OfferWindow(run_, now - 2.0, now - 1.0, poll_s=0.01)
    producer = SimpleNamespace(publisher=Sink())
    stream = Stream()
    window.install(producer, stream)  # type: ignore[arg-type]
    # Given 100 readings offered a second before the window and 300 inside it
    stream.chunk(100, now - 2.5)
    stream.chunk(300, now - 1.5)
    # And a batch holding two window readings (one pushed back during the window and
    # taken only now) plus one offered after the window, still in flight
    client.zadd(keys.inflight_since, {"b1": now})
    producer.publisher.publish_many([batch("b1", "standard", [now - 1.5, now - 1.2, now - 0.5])])
    # And a premium batch of readings offered before the window
    producer.publisher.publish_many([batch("b0", "premium", [now - 2.5])])
    time.sleep(0.1)
    # When the batch is applied (its ledger entry settled)
    client.zrem(keys.inflight_since, "b1")
    report = window.report(timeout_s=5.0)
    # Then only its two window readings count, each from its first offer (>= 1.2 s)
    assert report["latency_ms"]["standard"]["count"] == 2
    assert report["latency_ms"]["standard"]["p50"] >= 1_200
    assert "premium" not in report["latency_ms"]
    # And the offered multiple is measured from what the source offered
    assert report["offered_rps"] == 300.0
    assert report["offered_x"] == 1.5  # 300/s inside over 200/s in the 0.5 s before
    assert report["unfinished_batches"] == 0
