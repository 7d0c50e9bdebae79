"""Given bad data or a Redis that refuses, the routine task dead-letters exactly what is bad,
counted by the readings it carries, and leaves the rest for the in-flight ledger."""

from __future__ import annotations

import time
from typing import Any

import fakeredis
import numpy as np
import pytest
import redis
from celery.exceptions import Reject
from runtime_doubles import MakeRuntime

from scheduler.codec import encode_batch
from scheduler.model import Batch
from scheduler.registry import generate_registry
from stores.inflight import InflightLedger
from stores.keys import Keys
from stores.redis_state import RedisStateStore
from tasks import routine

KEYS = Keys("t-guards")


@pytest.fixture
def store(make_runtime: MakeRuntime) -> RedisStateStore:
    rt = make_runtime(fakeredis.FakeRedis(), key_prefix=KEYS.prefix)
    assert isinstance(rt.stores.state, RedisStateStore)
    return rt.stores.state


def payload(dev: np.ndarray, values: np.ndarray, batch_id: str = "g1") -> dict[str, Any]:
    now = time.time()
    n = len(dev)
    return encode_batch(
        Batch(
            batch_id,
            "eu-west",
            "standard",
            ("value",),
            dev.astype(np.uint64),
            np.full(n, now - 1),
            values.reshape(n, 1),
            np.full(n, now),
        )
    )


def run(p: dict[str, Any]) -> Any:
    return routine.process_routine.apply(args=(p,)).get(disable_sync_subtasks=False)


def letters(store: RedisStateStore) -> dict[str, int]:
    out: dict[str, int] = {}
    for dl in store.dead_letters(100):
        out[dl.reason] = out.get(dl.reason, 0) + dl.readings
    return out


def test_non_finite_values_and_unknown_devices_are_dead_lettered_once_and_the_rest_applied(
    store: RedisStateStore,
) -> None:
    reg = generate_registry(1_000, seed=2)
    store.save_registry(reg)
    dev = np.concatenate((reg.device_id[:10], np.arange(5, dtype=np.uint64) + np.uint64(2**62)))
    values = np.ones(15)
    values[:3] = np.nan
    p = payload(dev, values)

    assert run(p) == 7
    run(p)  # delivered again

    assert letters(store) == {"not_finite": 3, "unknown_device": 5}
    assert store.counters()["dead_lettered"] == 8
    assert store.rollup_count_total() == 7


def test_a_batch_whose_n_disagrees_with_its_columns_counts_the_columns(
    store: RedisStateStore,
) -> None:
    p = payload(np.arange(4), np.ones(4))
    p["n"] = 10**9

    run(p)

    assert letters(store) == {"invalid_batch": 4}
    assert store.counters()["dead_lettered"] == 4


class OutOfMemoryStore(RedisStateStore):
    """A state store on a Redis at ``maxmemory``: every batch's effects are refused."""

    def apply_batch(self, *_: Any, **__: Any) -> bool:
        raise redis.ResponseError("OOM command not allowed when used memory > 'maxmemory'.")


def test_redis_at_maxmemory_leaves_the_batch_to_the_ledger_not_the_dead_letters(
    make_runtime: MakeRuntime,
) -> None:
    client = fakeredis.FakeRedis()
    rt = make_runtime(client, key_prefix=KEYS.prefix)
    full = OutOfMemoryStore(client, KEYS)
    rt.stores.state = rt.stores.claims = full
    p = payload(np.arange(4), np.ones(4))
    ledger = InflightLedger(client, KEYS)
    ledger.record("g1", "eu-west.standard", p, routine.ROUTINE_TASK, time.time())

    run(p)

    assert letters(full) == {} and ledger.size() == 1


def test_a_retry_the_broker_did_not_take_is_left_to_the_ledger(store: RedisStateStore) -> None:
    p = payload(np.arange(4), np.ones(4))
    ledger = InflightLedger(store.client, KEYS)
    ledger.record("g1", "eu-west.standard", p, routine.ROUTINE_TASK, time.time())

    routine._given_up(exception=Reject(ConnectionError("refused"), requeue=False), args=(p,))

    assert letters(store) == {} and ledger.size() == 1
