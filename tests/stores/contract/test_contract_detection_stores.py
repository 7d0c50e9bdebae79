"""Detector states, the dropout sweep's pages and incidents: one contract, Redis and memory."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from stores.bundle import Stores


def commit(stores: Stores, batch_id: str, devices: list[int]) -> None:
    ids = np.array(devices, dtype=np.uint64)
    loaded = stores.detector.load(batch_id, ids, 1)
    assert loaded.states is not None
    assert stores.detector.commit(loaded, loaded.states + 1.0, {}, len(devices), 0)


def test_a_screened_batch_is_not_screened_again(stores: Stores) -> None:
    commit(stores, "s1", [1, 2])
    assert stores.detector.load("s1", np.array([1], dtype=np.uint64), 1).states is None


def test_a_sweep_pass_sees_every_state_and_then_wraps(stores: Stores) -> None:
    commit(stores, "s1", list(range(1, 31)))
    seen: set[int] = set()
    for _ in range(1_000):
        page = stores.dropout.page("eu", 7)
        seen.update(page.device_ids.tolist())
        if page.wrapped:
            break
    assert seen == set(range(1, 31))


def test_a_mark_is_written_only_where_the_state_did_not_change(
    stores: Stores, swept_blobs: Callable[[], dict[int, bytes]]
) -> None:
    commit(stores, "s1", [5, 6])
    blobs = swept_blobs()
    ids = np.array([5, 6], dtype=np.uint64)
    seen = [blobs[5], blobs[6]]
    commit(stores, "s2", [6])  # device 6 screened meanwhile
    written = stores.dropout.mark(
        ids, seen, [b"m" * len(seen[0]), b"m" * len(seen[1])], ("eu:standard",)
    )
    assert written.tolist() == [True, False]


def test_incident_folds_are_applied_once_per_batch(stores: Stores) -> None:
    def step(state: dict | None) -> tuple[dict, int]:  # type: ignore[type-arg]
        n = (state or {}).get("n", 0) + 1
        return {"n": n}, n

    assert stores.incidents.fold("eu", "b1", step) == 1
    assert stores.incidents.fold("eu", "b1", step) is None
    assert stores.incidents.fold("eu", None, step) == 2
    assert stores.incidents.load("eu") == {"n": 2}


def test_acceleration_is_booked_at_most_once_per_interval(stores: Stores) -> None:
    assert stores.incidents.want_accelerate("eu", "i1", interval_s=60.0)
    assert not stores.incidents.want_accelerate("eu", "i1", interval_s=60.0)
    assert stores.incidents.want_accelerate("eu", "i2", interval_s=60.0)


def test_acceleration_of_several_incidents_is_booked_in_one_ask(stores: Stores) -> None:
    assert stores.incidents.want_accelerate("eu", "i1", interval_s=60.0)
    # Given i1 booked, a fold that grew i1, i2 and i3 may book only i2 and i3
    wanted = stores.incidents.want_accelerate_many("eu", ["i1", "i2", "i3"], interval_s=60.0)
    assert wanted == [False, True, True]
    assert stores.incidents.want_accelerate_many("eu", ["i2", "i3"], interval_s=60.0) == [
        False,
        False,
    ]
    # And another region's incidents are its own; asking for none is no booking
    assert stores.incidents.want_accelerate_many("us", ["i1"], interval_s=60.0) == [True]
    assert stores.incidents.want_accelerate_many("eu", [], interval_s=60.0) == []


def test_a_screening_streams_frontier_only_moves_forward(stores: Stores) -> None:
    ids = np.array([1], dtype=np.uint64)
    for batch_id, newest_ts in (("f1", 100.0), ("f2", 90.0), ("f3", 120.0)):
        loaded = stores.detector.load(batch_id, ids, 1)
        assert loaded.states is not None
        frontier = ("eu", "standard", newest_ts)
        stores.detector.commit(loaded, loaded.states, {}, 1, 0, b"", frontier)
    # A late batch (90) never moves it back; each region and stream keeps its own
    assert stores.detector.frontier("eu") == {"standard": 120.0}
    assert stores.dropout.frontier("eu") == {"standard": 120.0}
    assert stores.detector.frontier("us") == {}


def remembered_on_a_pass(stores: Stores, region: str) -> tuple[set[int], int]:
    """Devices a pass over ``region``'s states shows as remembered folded, and its number."""
    found: set[int] = set()
    for _ in range(1_000):
        page = stores.dropout.page(region, 100)
        assert page.folded_since_ts is not None
        found.update(page.device_ids[np.isfinite(page.folded_since_ts)].tolist())
        if page.wrapped:
            return found, page.pass_no
    raise AssertionError("the pass never wrapped")


def test_a_remembered_device_two_passes_do_not_find_is_forgotten(stores: Stores) -> None:
    commit(stores, "s1", [11, 12, 13])
    _, first = remembered_on_a_pass(stores, "eu")
    ids = np.array([11, 12, 13, 14], dtype=np.uint64)
    # Given four devices folded into a silence in a pass, 14 with no state (gone), 13 and
    # 14 armed
    stores.dropout.fold("eu", ids, np.full(4, 100.0), first)
    stores.dropout.arm("eu", ids[2:], np.full(2, 150.0))
    assert stores.dropout.end_pass("eu", first, now_ts=200.0) == 0
    # When the next pass finds 11 and 13 still remembered, and the ones after 11 alone
    seen, second = remembered_on_a_pass(stores, "eu")
    assert (seen, second) == ({11, 12, 13}, first + 1)
    stores.dropout.keep("eu", ids[[0, 2]], second)
    # Then a device one pass missed is not forgotten yet (a sweep may lag a pass) ...
    assert stores.dropout.end_pass("eu", second, now_ts=210.0) == 0
    seen, third = remembered_on_a_pass(stores, "eu")
    assert (seen, third) == ({11, 12, 13}, second + 1)
    stores.dropout.keep("eu", ids[:1], third)
    # ... one two passes missed is
    assert stores.dropout.end_pass("eu", third, now_ts=220.0) == 2
    seen, fourth = remembered_on_a_pass(stores, "eu")
    assert (seen, fourth) == ({11, 13}, third + 1)
    stores.dropout.keep("eu", ids[:1], fourth)
    assert stores.dropout.end_pass("eu", fourth, now_ts=230.0) == 1
    # And only 11 is still remembered; settled, it is gone with nothing left to forget
    seen, fifth = remembered_on_a_pass(stores, "eu")
    assert seen == {11}
    stores.dropout.forget("eu", ids[:1])
    assert stores.dropout.end_pass("eu", fifth, now_ts=240.0) == 0
    assert remembered_on_a_pass(stores, "eu")[0] == set()


def test_a_device_remembered_by_no_numbered_pass_is_forgotten_like_the_rest(
    stores: Stores,
) -> None:
    commit(stores, "s1", [31])
    _, first = remembered_on_a_pass(stores, "eu")
    # Given a device remembered as armed only, found by no numbered pass (its state gone)
    stores.dropout.arm("eu", np.array([32], dtype=np.uint64), np.array([150.0]))
    # When passes end without finding it
    ended = [stores.dropout.end_pass("eu", first + k, now_ts=200.0 + k) for k in range(4)]
    # Then it is forgotten once two passes after the first that knew it missed it
    assert ended == [0, 0, 1, 0]


def test_one_sweep_of_a_region_holds_its_lease_at_a_time(stores: Stores) -> None:
    # Given a sweep of eu holding the region's lease
    token = stores.dropout.claim_sweep("eu", hold_ms=60_000)
    assert token is not None
    # Then no other sweep of eu gets it, while a sweep of another region does
    assert stores.dropout.claim_sweep("eu", hold_ms=60_000) is None
    assert stores.dropout.claim_sweep("us", hold_ms=60_000) is not None
    # And only its holder gives it back
    stores.dropout.release_sweep("eu", "someone-else")
    assert stores.dropout.claim_sweep("eu", hold_ms=60_000) is None
    stores.dropout.release_sweep("eu", token)
    assert stores.dropout.claim_sweep("eu", hold_ms=60_000) is not None


def test_the_lease_of_a_sweep_that_died_lapses(stores: Stores) -> None:
    # Given a sweep that took the lease for a moment and never gave it back
    assert stores.dropout.claim_sweep("eu", hold_ms=20) is not None
    # Then a later sweep gets it once that moment is over
    deadline = time.monotonic() + 30.0
    while stores.dropout.claim_sweep("eu", hold_ms=60_000) is None:
        assert time.monotonic() < deadline, "the lease never lapsed"
        time.sleep(0.01)


def test_event_spans_long_over_are_dropped_when_a_pass_ends(stores: Stores) -> None:
    stores.dropout.note_events("eu", {7: (100.0, 110.0), 8: (5_000.0, 5_010.0)})
    stores.dropout.end_pass("eu", 0, now_ts=5_100.0)
    assert stores.dropout.events("eu") == {8: (5_000.0, 5_010.0)}


def test_the_page_that_ends_a_pass_numbers_the_next_at_once(stores: Stores) -> None:
    commit(stores, "s1", [21, 22])
    _, first = remembered_on_a_pass(stores, "us")
    # When a sweep beside the one that read the last page reads on before that one
    # ended its pass
    page = stores.dropout.page("us", 100)
    # Then it pages the next pass under the next number
    assert page.pass_no == first + 1
