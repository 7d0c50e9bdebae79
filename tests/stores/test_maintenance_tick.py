"""The maintenance tick and run steps against a fakeredis book: dispatch, retries, rebooking."""

from __future__ import annotations

import functools
import time

import fakeredis
import pytest

from scheduler.maintenance import RetryPolicy
from stores.keys import Keys
from stores.reservation_store import ReservationStore
from tasks.maintenance import begin, finish, plan_tick
from tasks.maintenance_ops import OpOutcome, expire_rollups, trim_streams

NOW = 1_800_000_000.0
KEYS = Keys("t")
POLICY = RetryPolicy(max_tries=2, backoff_base_s=1.0)


@pytest.fixture
def store() -> ReservationStore:
    return ReservationStore(fakeredis.FakeRedis(), KEYS, {"eu-west": 8}, {"eu-west": 2})


def _tick(store: ReservationStore, now: float) -> list:
    return store.update(functools.partial(plan_tick, now_ts=now, policy=POLICY))


def test_a_window_is_sent_once_ahead_of_its_start_and_pre_drained(store: ReservationStore) -> None:
    # Given a 2-slot window starting in 60 s
    r = store.book("eu-west", NOW + 60, 30, 2, "trim_streams", NOW)
    # When beat ticks now, then 25 s before the start, then 1.5 s before it, twice
    far = _tick(store, NOW)
    drain_far = store.drain_levels()["eu-west"]
    _tick(store, NOW + 35)
    drain_near = store.drain_levels()["eu-west"]
    sent = _tick(store, NOW + 58.5)
    again = _tick(store, NOW + 59.0)
    # Then nothing is sent early, the slots are held back within the lead time,
    # and the try is sent once, due at the window's start
    assert far == [] and drain_far == 0
    assert drain_near == 2
    assert [(d.reservation_id, d.try_no, d.due_ts) for d in sent] == [
        (r.reservation_id, 1, r.start_ts)
    ]
    assert again == []


def test_retries_run_out_and_the_operation_is_rebooked_with_an_alert(
    store: ReservationStore,
) -> None:
    # Given a window whose operation fails every try (2 tries, 1 s backoff)
    r = store.book("eu-west", NOW + 10, 60, 2, "rebuild_registry", NOW)
    rid = r.reservation_id
    _tick(store, NOW + 9)
    # When the first try starts on time and fails
    started = store.update(functools.partial(begin, reservation_id=rid, try_no=1, now_ts=NOW + 10))
    store.update(
        functools.partial(
            finish, reservation_id=rid, try_no=1, now_ts=NOW + 11, outcome=None, error="boom"
        )
    )
    # And the retry is sent after the backoff, starts and fails too
    retry = _tick(store, NOW + 11.5)
    store.update(functools.partial(begin, reservation_id=rid, try_no=2, now_ts=NOW + 12))
    store.update(
        functools.partial(
            finish, reservation_id=rid, try_no=2, now_ts=NOW + 13, outcome=None, error="boom"
        )
    )
    # Then the first try started with no delay and the retry was due after the backoff
    assert started is not None and not isinstance(started, float)
    assert [(d.try_no, d.due_ts) for d in retry] == [(2, NOW + 12)]
    # And the operation is rebooked after the failed window, which is released
    (new,) = store.list()
    assert new.operation == "rebuild_registry" and new.rebooked_from == rid
    assert new.start_ts >= r.end_ts and new.attempt == 1
    # And an alert says what failed, why, and where it went
    (alert,) = store.client.xrange(KEYS.alerts)
    fields = {k.decode(): v.decode() for k, v in alert[1].items()}
    assert fields["kind"] == "maintenance_rebooked"
    assert fields["reservation_id"] == rid and fields["rebooked_as"] == new.reservation_id
    assert "boom" in fields["reason"]
    events = [e["event"] for e in store.events()]
    assert events == ["started", "failed", "started", "failed", "rebooked"]


def test_a_window_missed_entirely_is_rebooked(store: ReservationStore) -> None:
    # Given a window no worker ever started (beat was down throughout)
    r = store.book("eu-west", NOW + 10, 20, 1, "trim_streams", NOW)
    # When the tick sees it after its end
    _tick(store, NOW + 31)
    # Then it is rebooked to start no earlier than now, with an alert; the missed one stays listed
    missed, new = store.list()
    assert missed == r
    assert new.rebooked_from == r.reservation_id and new.start_ts >= NOW + 31
    assert store.client.xlen(KEYS.alerts) == 1


def test_a_redelivered_try_does_not_run_twice(store: ReservationStore) -> None:
    # Given a try that started
    r = store.book("eu-west", NOW + 5, 60, 1, "trim_streams", NOW)
    _tick(store, NOW + 4)
    first = store.update(
        functools.partial(begin, reservation_id=r.reservation_id, try_no=1, now_ts=NOW + 5)
    )
    # When the same message is delivered again
    second = store.update(
        functools.partial(begin, reservation_id=r.reservation_id, try_no=1, now_ts=NOW + 6)
    )
    # Then the second delivery is skipped
    assert first is not None and second is None


def test_expire_rollups_deletes_old_minutes_and_keeps_recent_ones() -> None:
    # Given a rollup minute two days old and one from this minute, with its writer set
    client = fakeredis.FakeRedis()
    now_minute = int(time.time() // 60 * 60)
    old_minute = now_minute - 2 * 24 * 3600
    for minute in (old_minute, now_minute):
        client.hset(KEYS.rollup(minute, "w1"), "1", b"x")
        client.sadd(KEYS.rollup_writers(minute), "w1")
    # When the operation runs to completion
    out = expire_rollups(client, KEYS, "", time.time() + 10)
    # Then only the recent minute is left, and it now expires
    assert out == OpOutcome(True, "", out.counts) and out.counts["deleted"] == 2
    assert not client.exists(KEYS.rollup(old_minute, "w1"), KEYS.rollup_writers(old_minute))
    assert client.ttl(KEYS.rollup(now_minute, "w1")) > 0
    # And running it again changes nothing
    assert expire_rollups(client, KEYS, "", time.time() + 10).counts["deleted"] == 0


def test_trim_streams_trims_old_alerts() -> None:
    # Given an alert from last month and one from now
    client = fakeredis.FakeRedis()
    client.xadd(KEYS.alerts, {"kind": "old"}, id=f"{int((time.time() - 30 * 86400) * 1000)}-0")
    client.xadd(KEYS.alerts, {"kind": "new"})
    # When the streams are trimmed
    trim_streams(client, KEYS, "", time.time() + 10)
    # Then only the recent alert is left
    assert [f[b"kind"] for _id, f in client.xrange(KEYS.alerts)] == [b"new"]


def test_work_cut_off_at_the_window_end_resumes_from_its_cursor_in_the_next_window(
    store: ReservationStore,
) -> None:
    # Given an operation that started in its window
    r = store.book("eu-west", NOW + 5, 10, 1, "expire_rollups", NOW)
    rid = r.reservation_id
    _tick(store, NOW + 4)
    store.update(functools.partial(begin, reservation_id=rid, try_no=1, now_ts=NOW + 5))
    # When it stops at the cutoff with work left (SCAN cursor 4242)
    store.update(
        functools.partial(
            finish,
            reservation_id=rid,
            try_no=1,
            now_ts=r.end_ts,
            outcome=OpOutcome(False, "4242"),
        )
    )
    # Then the rest is deferred to a new window whose run resumes at the cursor
    state = store.load()
    (new,) = [x for x in state.book.list() if x.rebooked_from == rid]
    assert state.runs[new.reservation_id]["run"]["cursor"] == "4242"
    assert store.client.xlen(KEYS.alerts) == 1
