"""In-flight ledger and dead-letter claims: the same answers from Redis and from memory."""

from __future__ import annotations

import numpy as np

from scheduler.model import DeadLetter
from scheduler.rollup import compute_rollups
from stores.bundle import Stores


def letter(reason: str, readings: int) -> DeadLetter:
    return DeadLetter(reason, "detail", b"raw", "iotsched.routine", 1.0, readings)


def test_a_recorded_batch_is_overdue_after_its_grace_until_it_is_done(stores: Stores) -> None:
    ledger = stores.inflight
    ledger.record_many([("b1", "eu.premium", {"n": 1}, "iotsched.routine")], now_ts=100.0)
    assert ledger.overdue(now_ts=105.0, grace_s=10.0) == []
    [late] = ledger.overdue(now_ts=111.0, grace_s=10.0)
    assert (late.batch_id, late.queue, late.payload, late.task) == (
        "b1",
        "eu.premium",
        {"n": 1},
        "iotsched.routine",
    )
    # Found overdue, its clock restarted: not found again within the grace.
    assert ledger.overdue(now_ts=112.0, grace_s=10.0) == []
    ledger.done("b1")
    assert ledger.size() == 0 and ledger.overdue(now_ts=1e9, grace_s=10.0) == []


def test_recording_a_batch_again_replaces_its_entry(stores: Stores) -> None:
    ledger = stores.inflight
    ledger.record_many([("b1", "eu.standard", {"chunk0": 0}, "t")], now_ts=0.0)
    ledger.record_many([("b1", "eu.standard", {"chunk0": 2}, "t")], now_ts=5.0)
    assert ledger.size() == 1
    [late] = ledger.overdue(now_ts=20.0, grace_s=10.0)
    assert late.payload == {"chunk0": 2}


def test_overdue_leaves_the_queues_it_is_told_to_skip(stores: Stores) -> None:
    ledger = stores.inflight
    ledger.record_many([("a", "eu.premium", {}, "t"), ("b", "us.premium", {}, "t")], now_ts=0.0)
    found = ledger.overdue(now_ts=100.0, grace_s=1.0, skip_queues=lambda qs: {"eu.premium"})
    assert [b.batch_id for b in found] == ["b"]


def test_one_reaper_leads_at_a_time(stores: Stores) -> None:
    ledger = stores.inflight
    assert ledger.try_lead("one", ttl_s=30.0)
    assert not ledger.try_lead("two", ttl_s=30.0)
    assert ledger.try_lead("one", ttl_s=30.0)


def test_a_claim_is_dead_lettered_once_and_counted_once(stores: Stores) -> None:
    won = stores.claims.dead_letter_claimed([("b#0", letter("task_error", 5))])
    again = stores.claims.dead_letter_claimed(
        [("b#0", letter("task_error", 5)), ("b#1", letter("task_error", 3))]
    )
    assert (won, again) == ([True], [False, True])
    counters = stores.state.counters()
    assert counters["dead_lettered"] == 8 and counters["dead_lettered:task_error"] == 8
    assert [d.readings for d in stores.state.dead_letters()] == [5, 3]


def test_a_dead_lettered_chunk_is_never_applied_afterwards(stores: Stores) -> None:
    stores.claims.dead_letter_claimed([("b#0", letter("soft_time_limit", 1))])
    delta = compute_rollups(np.array([1], dtype=np.uint64), np.array([60.0]), np.ones((1, 1)))
    assert stores.state.apply_batch("b#0", "premium", delta, {}, 1) is False
    assert stores.state.counters().get("processed:premium", 0) == 0
