"""Large held copies go to the broker as a reference to their in-flight ledger entry
(a claim check): the task fetches the columns, and a delivery after the copy settled
screens nothing."""

from __future__ import annotations

import time
from typing import Any

import fakeredis
import numpy as np
import pytest
from runtime_doubles import MakeRuntime

from ingest.celery_publisher import CeleryPublisher
from scheduler.codec import decode_batch
from scheduler.model import Batch
from scheduler.registry import generate_registry
from scheduler.screen_cost import SCREEN_HELD_READINGS
from scheduler.wire import HELD_SCREEN_FIELD, LEDGER_REF_FIELD, SCREEN_TASK
from tasks.screen import handle_screen


def held_batch(batch_id: str, ids: np.ndarray, per_device: int) -> Batch:
    """``per_device`` readings of each device, a second apart, in time order."""
    start = time.time() - per_device
    dev = np.tile(ids.astype(np.uint64), per_device)
    ts = np.repeat(start + np.arange(per_device, dtype=np.float64), ids.size)
    n = dev.size
    values = np.random.default_rng(5).normal(20.0, 1.0, (n, 1))
    return Batch(batch_id, "eu-west", "standard", ("value",), dev, ts, values, np.full(n, start))


@pytest.mark.parametrize("redis_backed", [True, False], ids=["redis", "memory"])
def test_a_large_held_copy_is_sent_as_its_ledger_entry_and_screened_once(
    make_runtime: MakeRuntime, recording_app: Any, redis_backed: bool
) -> None:
    # Given a runtime whose publisher records copies in the in-flight ledger
    rt = make_runtime(fakeredis.FakeRedis() if redis_backed else None)
    reg = generate_registry(500, seed=3)
    rt.stores.state.save_registry(reg)
    publisher = CeleryPublisher(
        recording_app, screening=True, publisher=rt.publisher, held_screen_max_readings=5_000
    )
    eu = reg.device_id[:200]
    large = held_batch("p:eu-west:standard:h1", eu, per_device=10)
    # When a held copy of 2,000 readings is screened while held
    publisher.screen_many([large])
    publisher.flush()
    # Then its message carries the reference and no columns
    (message,) = [p[0] for p in recording_app.named(SCREEN_TASK)]
    assert message[LEDGER_REF_FIELD] is True and message[HELD_SCREEN_FIELD] is True
    assert message["n"] == large.device_id.size and "device_id" not in message
    # And the ledger holds the whole copy (what the reaper would send again)
    recorded = rt.stores.inflight.payload(message["id"])
    assert recorded is not None
    np.testing.assert_array_equal(decode_batch(recorded).device_id, large.device_id)
    # When the task runs, its readings are screened and the ledger entry settles
    handle_screen(rt, message)
    counters = rt.stores.state.counters()
    assert counters[SCREEN_HELD_READINGS] == large.device_id.size
    assert rt.stores.inflight.payload(message["id"]) is None
    assert rt.stores.detector.frontier("eu-west") == {}
    # When the same message is delivered again (the broker redelivers after a crash)
    assert handle_screen(rt, message) == 0
    # Then nothing is screened twice, and the settled delivery is counted
    counters = rt.stores.state.counters()
    assert counters[SCREEN_HELD_READINGS] == large.device_id.size
    assert counters["screen_ref_settled"] == 1


def test_small_held_copies_and_admitted_copies_carry_their_columns(
    make_runtime: MakeRuntime, recording_app: Any
) -> None:
    # Given the same publisher
    rt = make_runtime(fakeredis.FakeRedis())
    reg = generate_registry(100, seed=3)
    rt.stores.state.save_registry(reg)
    publisher = CeleryPublisher(recording_app, screening=True, publisher=rt.publisher)
    eu = reg.device_id[:10]
    # When a held copy of 20 readings and an admitted batch go to screening
    publisher.screen_many([held_batch("p:eu-west:standard:h2", eu, per_device=2)])
    publisher.publish(held_batch("p:eu-west:standard:a1", eu, per_device=2))
    publisher.flush()
    # Then both messages carry their columns: a fetch would cost more than the bytes
    copies = [p[0] for p in recording_app.named(SCREEN_TASK)]
    assert len(copies) == 2
    assert all(LEDGER_REF_FIELD not in c and "device_id" in c for c in copies)
