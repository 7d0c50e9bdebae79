"""A routine message that is a claim check (``Publisher.send_routine``: a standard batch
sent as a reference to its in-flight ledger entry) applies the recorded batch, once; a
delivery after the entry settled applies nothing; a fetch that keeps failing leaves the
batch to the ledger instead of settling it."""

from __future__ import annotations

import time
from typing import Any

import fakeredis
import numpy as np
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from runtime_doubles import MakeRuntime

from runtime.publisher import ledger_reference
from runtime.runtime import Runtime
from scheduler.codec import encode_batch
from scheduler.model import Batch
from scheduler.wire import LEDGER_REF_FIELD, ROUTINE_TASK
from tasks import routine
from tasks.base import RetryLater

N = 2_000


def recorded(rt: Runtime, batch_id: str = "r1") -> dict[str, Any]:
    """A standard batch of ``N`` readings recorded in the ledger; returns its claim check."""
    now = time.time()
    batch = Batch(
        batch_id,
        "eu-west",
        "standard",
        ("value",),
        np.arange(N, dtype=np.uint64),
        np.full(N, now - 1.0),
        np.ones((N, 1)),
        np.full(N, now - 0.5),
    )
    payload = encode_batch(batch)
    rt.stores.inflight.record_many([(batch_id, "eu-west.standard", payload, ROUTINE_TASK)], now)
    return ledger_reference(payload)


@pytest.fixture
def rt(make_runtime: MakeRuntime) -> Runtime:
    return make_runtime(fakeredis.FakeRedis(), key_prefix="t")


def test_a_claim_check_applies_the_recorded_batch_once(rt: Runtime) -> None:
    # Given a claim check: no columns, its batch recorded whole in the ledger
    ref = recorded(rt)
    assert ref[LEDGER_REF_FIELD] is True and "device_id" not in ref and ref["n"] == N
    # When it is processed
    applied = routine.handle_routine(rt, ref)
    # Then every reading of the recorded batch is applied and the entry settles
    assert applied == N
    assert rt.stores.state.counters()["processed:standard"] == N
    assert rt.stores.inflight.payload(ref["id"]) is None
    # When the same message is delivered again (a redelivery after a crash)
    assert routine.handle_routine(rt, ref) == 0
    # Then nothing is applied twice, and the settled delivery is counted
    counters = rt.stores.state.counters()
    assert counters["processed:standard"] == N
    assert counters["routine_ref_settled"] == 1


def test_a_claim_check_whose_batch_cannot_be_fetched_is_left_to_the_ledger(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a claim check, and a ledger that cannot be read
    ref = recorded(rt, "r2")
    inflight = rt.stores.inflight

    def unreachable(batch_id: str) -> None:
        raise RedisConnectionError("connection refused")

    monkeypatch.setattr(inflight, "payload", unreachable)
    # When it is processed, it asks to be retried as it was
    with pytest.raises(RetryLater) as later:
        routine.handle_routine(rt, ref)
    assert later.value.retry_args == (ref,)
    # And past the retry budget it gives up without settling or dead-lettering anything
    assert later.value.give_up(rt, later.value.cause) == 0
    monkeypatch.undo()
    assert inflight.payload(ref["id"]) is not None
    assert rt.stores.state.counters().get("dead_lettered", 0) == 0
    # So the reaper's resend (the whole batch) is still applied
    whole = inflight.payload(ref["id"])
    assert whole is not None and routine.handle_routine(rt, whole) == N
