"""The reservation book in Redis: shared between processes, refused with reasons, race-safe."""

from __future__ import annotations

import json

import fakeredis
import pytest

from scheduler.reservations import ReservationConflict, ReservationNotFound
from stores.keys import Keys
from stores.reservation_store import BookState, ReservationStore

NOW = 1_800_000_000.0
KEYS = Keys("t")


def _store(client: fakeredis.FakeRedis, budget: int = 8, guarantee: int = 2) -> ReservationStore:
    return ReservationStore(
        client,
        KEYS,
        {"eu-west": budget, "us-east": budget},
        {
            "eu-west": guarantee,
            "us-east": guarantee,
        },
    )


@pytest.fixture
def client() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


def test_a_booking_is_seen_by_every_process(client: fakeredis.FakeRedis) -> None:
    # Given one process books a window
    booked = _store(client).book("eu-west", NOW + 60, 600, 3, "expire_rollups", NOW)
    # When another process (its own store object) lists the book
    listed = _store(client).list()
    # Then it sees that reservation, unchanged
    assert listed == [booked]


def test_conflict_names_the_holder_and_the_earliest_start_that_fits(
    client: fakeredis.FakeRedis,
) -> None:
    # Given 6 bookable slots (8 minus a premium guarantee of 2), 4 held 10:00–10:10
    store = _store(client)
    held = store.book("eu-west", NOW + 600, 600, 4, "compact_detector_state", NOW)
    # When 3 more slots are asked for over an overlapping window
    with pytest.raises(ReservationConflict) as refused:
        store.book("eu-west", NOW + 900, 300, 3, "trim_streams", NOW)
    # Then the refusal names the holder and the first start after it ends
    assert held.reservation_id in str(refused.value)
    assert refused.value.earliest_start_ts == held.end_ts
    assert f"{held.end_ts:.0f}" in str(refused.value)
    # And nothing was stored for the refused booking
    assert _store(client).list() == [held]


def test_cancel_frees_the_slots_and_forgets_the_run(client: fakeredis.FakeRedis) -> None:
    # Given a window holding every bookable slot, with a run record beside it
    store = _store(client)
    held = store.book("us-east", NOW + 60, 600, 6, "trim_streams", NOW)

    def add_run(s: BookState) -> None:
        s.runs[held.reservation_id] = {"run": {}, "dispatched": 0}

    store.update(add_run)
    # When it is cancelled
    store.cancel(held.reservation_id)
    # Then the same window can be booked again and the run is gone
    again = store.book("us-east", NOW + 60, 600, 6, "trim_streams", NOW)
    assert again.reservation_id != held.reservation_id
    assert store.load().runs == {}
    # And cancelling an unknown id says so
    with pytest.raises(ReservationNotFound):
        store.cancel(held.reservation_id)


def test_a_concurrent_write_is_not_lost(client: fakeredis.FakeRedis) -> None:
    # Given two processes booking at the same moment: the second writes while the first
    # is between reading the book and writing it back
    first, second = _store(client), _store(client)
    calls = {"n": 0}

    def book_with_interference(s: BookState) -> str:
        calls["n"] += 1
        if calls["n"] == 1:
            second.book("eu-west", NOW + 60, 60, 2, "trim_streams", NOW)
        return s.book.book("eu-west", NOW + 60, 60, 3, "expire_rollups", NOW).reservation_id

    # When the first finishes its booking
    first.update(book_with_interference)
    # Then it retried on the fresh book, and both bookings are kept with distinct ids
    listed = first.list()
    assert calls["n"] == 2
    assert sorted(r.slots for r in listed) == [2, 3]
    assert len({r.reservation_id for r in listed}) == 2
    # And the stored document is plain JSON another tool can read
    assert len(json.loads(client.get(KEYS.reservations))["reservations"]) == 2


def test_alerts_and_drain_levels_are_written_with_the_change(client: fakeredis.FakeRedis) -> None:
    # Given a change that raises an alert and publishes a drain level
    store = _store(client)

    def change(s: BookState) -> None:
        s.alerts.append({"kind": "maintenance_rebooked", "reservation_id": "eu-west-1"})
        s.drain_slots["eu-west"] = 3

    # When it is applied
    store.update(change)
    # Then both are visible
    assert client.xlen(KEYS.alerts) == 1
    assert store.drain_levels() == {"eu-west": 3}
