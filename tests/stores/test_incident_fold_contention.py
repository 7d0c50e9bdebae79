"""Given two anomaly workers of one region folding at once, neither fold is lost.

The Redis fold is optimistic (WATCH on the state, MULTI/EXEC): a fold whose state
changed under it applies nothing and folds again over the new state. Run on a private
redis-server, since the point is real WATCH/EXEC semantics.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
import redis

from scheduler.errors import TransientError
from stores.incident_store import RedisIncidentStore
from stores.keys import Keys


@pytest.fixture
def client(redis_server: str, key_prefix: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_server)
    yield c
    keys = list(c.scan_iter(match=f"{key_prefix}*", count=1_000))
    if keys:
        c.unlink(*keys)
    c.close()


def counting(calls: list[int]) -> Any:
    def step(state: dict[str, Any] | None) -> tuple[dict[str, Any], int]:
        n = (state or {}).get("n", 0) + 1
        calls.append(n)
        return {"n": n}, n

    return step


def test_a_fold_whose_state_changed_under_it_folds_again_over_the_new_state(
    client: redis.Redis, key_prefix: str
) -> None:
    store = RedisIncidentStore(client, Keys(key_prefix))
    other = RedisIncidentStore(client, Keys(key_prefix))
    inner: list[int] = []
    outer: list[int] = []

    def step(state: dict[str, Any] | None) -> tuple[dict[str, Any], int]:
        if not outer:
            # Given another worker folds batch b2 while this one is inside its step
            assert other.fold("eu", "b2", counting(inner)) == 1
        return counting(outer)(state)

    # When this worker's fold of b1 commits
    assert store.fold("eu", "b1", step) == 2
    # Then it was computed twice (over nothing, then over b2's state), saved once
    assert outer == [1, 2]
    assert store.load("eu") == {"n": 2}
    # And both batches are claimed: redeliveries of either are skipped
    assert store.fold("eu", "b1", counting([])) is None
    assert other.fold("eu", "b2", counting([])) is None
    assert store.load("eu") == {"n": 2}


def test_a_redelivery_seen_only_after_the_state_changed_is_still_skipped(
    client: redis.Redis, key_prefix: str
) -> None:
    store = RedisIncidentStore(client, Keys(key_prefix))
    other = RedisIncidentStore(client, Keys(key_prefix))
    calls: list[int] = []

    def step(state: dict[str, Any] | None) -> tuple[dict[str, Any], int]:
        if not calls:
            # Given the same batch is folded by another worker meanwhile (a redelivery)
            assert other.fold("eu", "b1", counting([])) == 1
        return counting(calls)(state)

    # Then this fold finds the claim on its second look and applies nothing
    assert store.fold("eu", "b1", step) is None
    assert store.load("eu") == {"n": 1}


def test_a_region_that_never_stops_changing_fails_transiently(
    client: redis.Redis, key_prefix: str
) -> None:
    store = RedisIncidentStore(client, Keys(key_prefix), max_attempts=3)
    other = RedisIncidentStore(client, Keys(key_prefix))

    def step(state: dict[str, Any] | None) -> tuple[dict[str, Any], int]:
        other.fold("eu", None, counting([]))
        return {"n": -1}, -1

    with pytest.raises(TransientError):
        store.fold("eu", "b1", step)
    # Nothing of this fold was saved, and its batch stays unclaimed (retried later)
    assert store.load("eu") == {"n": 3}
    assert store.fold("eu", "b1", counting([])) == 4


def test_a_pooled_connection_carries_no_watch_after_a_skipped_fold(
    client: redis.Redis, key_prefix: str
) -> None:
    store = RedisIncidentStore(client, Keys(key_prefix))
    assert store.fold("eu", "b1", counting([])) == 1
    assert store.fold("eu", "b1", counting([])) is None
    # A transaction on the same pool is not aborted by a WATCH left from the skip
    client.set(Keys(key_prefix).incidents("eu"), b"\x80")
    pipe = client.pipeline(transaction=True)
    pipe.set(f"{key_prefix}:x", 1)
    assert pipe.execute() == [True]


def test_a_timer_run_is_booked_once_until_it_is_due(client: redis.Redis, key_prefix: str) -> None:
    store = RedisIncidentStore(client, Keys(key_prefix))
    assert store.want_tick("eu", due_ts=1_010.0, now_ts=1_000.0)
    # A later timer is covered by the booked run; an earlier one books its own
    assert not store.want_tick("eu", due_ts=1_020.0, now_ts=1_001.0)
    assert store.want_tick("eu", due_ts=1_005.0, now_ts=1_001.0)
    # Once the booked moment is past, the next timer books again
    assert store.want_tick("eu", due_ts=1_030.0, now_ts=1_006.0)
    assert store.want_tick("us", due_ts=1_010.0, now_ts=1_000.0)


def test_a_fold_waits_while_a_worker_from_before_holds_the_region_lock(
    client: redis.Redis, key_prefix: str
) -> None:
    keys = Keys(key_prefix)
    store = RedisIncidentStore(client, keys, max_attempts=3)
    # Given a worker from before optimistic folds holding eu's lock (it folds under it)
    client.set(keys.incidents_lock("eu"), "old-worker", px=60_000)
    calls: list[int] = []
    # When a fold of eu runs meanwhile
    with pytest.raises(TransientError):
        store.fold("eu", "b1", counting(calls))
    # Then it neither stepped nor wrote: the old worker's write cannot overwrite it
    assert calls == [] and store.load("eu") is None
    # When the old worker releases the lock
    client.delete(keys.incidents_lock("eu"))
    # Then the fold goes through
    assert store.fold("eu", "b1", counting(calls)) == 1


def test_a_region_lock_taken_during_a_fold_aborts_it(client: redis.Redis, key_prefix: str) -> None:
    keys = Keys(key_prefix)
    store = RedisIncidentStore(client, keys)
    outer: list[int] = []

    def old_worker_writes_and_releases() -> None:
        client.set(keys.incidents("eu"), msgpack.packb({"n": 10}))
        client.delete(keys.incidents_lock("eu"))

    def step(state: dict[str, Any] | None) -> tuple[dict[str, Any], int]:
        if not outer:
            # Given a worker from before takes eu's lock while this fold is in its step
            # (it has read the state, and writes its fold of it 20 ms later)
            client.set(keys.incidents_lock("eu"), "old-worker", px=60_000)
            threading.Timer(0.02, old_worker_writes_and_releases).start()
        return counting(outer)(state)

    # When this fold commits
    assert store.fold("eu", "b1", step) == 11
    # Then it did not commit under the old worker's lock (whose write would have
    # overwritten it), and folded again over the old worker's state
    assert outer == [1, 11]
    assert store.load("eu") == {"n": 11}
