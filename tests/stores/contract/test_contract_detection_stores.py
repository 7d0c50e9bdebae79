"""Detector states, the dropout sweep's pages and incidents: one contract, Redis and memory."""

from __future__ import annotations

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


def test_a_mark_is_written_only_where_the_state_did_not_change(stores: Stores) -> None:
    commit(stores, "s1", [5, 6])
    # A pass may take several pages (SCAN over a keyspace other tests share): keep each
    # page's blobs, not only the last one's.
    blobs: dict[int, bytes] = {}
    for _ in range(1_000):
        page = stores.dropout.page("eu", 100)
        blobs.update(zip(page.device_ids.tolist(), page.blobs, strict=True))
        if page.wrapped:
            break
    ids = np.array([5, 6], dtype=np.uint64)
    seen = [blobs[5], blobs[6]]
    commit(stores, "s2", [6])  # device 6 screened meanwhile
    written = stores.dropout.mark(ids, seen, [b"m" * len(seen[0]), b"m" * len(seen[1])])
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
