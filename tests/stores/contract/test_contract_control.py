"""Reservations, pool heartbeats and the work budget: the same contract in Redis and memory."""

from __future__ import annotations

import pytest

from scheduler.reservations import ReservationConflict
from stores.bundle import Stores
from stores.pool_heartbeats import PoolBeat
from stores.reservation_store import BookState


def test_a_booked_window_is_listed_and_a_conflicting_one_refused(stores: Stores) -> None:
    book = stores.reservations
    # Five slots fit the region's bookable slots (its budget less premium's guarantee);
    # five more over the same time do not.
    made = book.update(lambda s: s.book.book("eu", 1_000.0, 60.0, 5, "trim_streams", 0.0))
    listed = book.load().book.list("eu")
    assert [r.reservation_id for r in listed] == [made.reservation_id]
    with pytest.raises(ReservationConflict):
        book.update(lambda s: s.book.book("eu", 1_030.0, 60.0, 5, "trim_streams", 0.0))


def test_runs_events_and_drain_levels_are_written_with_the_change(stores: Stores) -> None:
    def change(s: BookState) -> None:
        s.runs["r1"] = {"tries": 1}
        s.events.append({"event": "started", "reservation_id": "r1"})
        s.drain_slots["eu"] = 3

    stores.reservations.update(change)
    assert stores.reservations.load().runs == {"r1": {"tries": 1}}
    assert stores.reservations.events() == [{"event": "started", "reservation_id": "r1"}]
    assert stores.reservations.drain_levels() == {"eu": 3}

    def drop(s: BookState) -> None:
        del s.runs["r1"]

    stores.reservations.update(drop)
    assert stores.reservations.load().runs == {}


def test_a_failed_change_writes_nothing(stores: Stores) -> None:
    def change(s: BookState) -> None:
        s.runs["r1"] = {"tries": 1}
        raise ValueError("no")

    with pytest.raises(ValueError):
        stores.reservations.update(change)
    assert stores.reservations.load().runs == {}


def beat(node: str, region: str, at_ts: float) -> PoolBeat:
    return PoolBeat(node, region, 4, 1, 2.5, 10, 0, 8, 1, 4, None, 3.0, True, at_ts, "idle")


def test_pool_beats_are_exchanged_with_every_peer(stores: Stores) -> None:
    pools = stores.pool_heartbeats
    assert set(pools.exchange(beat("a@h", "eu", 1.0))) == {"a@h"}
    peers = pools.exchange(beat("b@h", "eu", 2.0))
    assert peers["a@h"] == beat("a@h", "eu", 1.0) and set(peers) == {"a@h", "b@h"}
    pools.forget("a@h")
    assert set(pools.read()) == {"b@h"}


def test_the_work_budget_admits_until_a_burst_is_spent(stores: Stores) -> None:
    budget = stores.work_budget
    assert budget.admits("eu", 100.0)
    budget.charge("eu", 100.0, cost_s=budget.budget.burst_s * 3)
    assert not budget.admits("eu", 100.0)
    assert budget.admits("us", 100.0)
