"""Given rows for several regions and tiers, the batcher flushes on size and on age."""

from __future__ import annotations

import numpy as np
from batcher_rows import rows
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.batching import Batcher, BatchingConfig
from scheduler.model import Topology

TOPO = Topology()


def test_a_full_buffer_is_cut_into_batches_of_exactly_max_size() -> None:
    b = Batcher(TOPO, ("value",), "p", BatchingConfig(max_readings=100))
    full = b.add(*rows(250, 1, 1))
    assert [len(x) for x in full] == [100, 100]
    assert {(x.region, x.tier) for x in full} == {("us-east", "standard")}
    assert b.buffered_readings == 50


def test_premium_flushes_after_its_age_limit_and_standard_waits_longer() -> None:
    b = Batcher(TOPO, ("value",), "p")
    b.add(*rows(10, 0, 0, t0=100.0))
    b.add(*rows(10, 0, 1, t0=100.0))
    assert b.due(100.010) == []
    premium = b.due(100.026)
    assert [(x.tier, len(x)) for x in premium] == [("premium", 10)]
    assert [(x.tier, len(x)) for x in b.due(100.251)] == [("standard", 10)]
    assert b.buffered_readings == 0


def test_first_tier_cuts_premium_whatever_its_age_but_what_the_hold_keeps() -> None:
    # Given fresh premium readings in two regions and standard readings
    b = Batcher(TOPO, ("value",), "p")
    b.add(*rows(10, 0, 0, t0=100.0))
    b.add(*rows(5, 1, 0, t0=100.0))
    b.add(*rows(10, 0, 1, t0=100.0))
    # When premium is asked for at once, region 1's held by premium coalescing
    out = b.first_tier(100.001, hold=lambda region, _age_s: region == 1)
    # Then region 0's premium comes out though younger than its age limit; the rest stays
    assert [(x.region, x.tier, len(x)) for x in out] == [(TOPO.regions[0], "premium", 10)]
    assert b.buffered_readings == 15


def test_batch_ids_are_deterministic_and_unique() -> None:
    def run() -> list[str]:
        b = Batcher(TOPO, ("value",), "gw1", BatchingConfig(max_readings=10))
        out = b.add(*rows(35, 2, 0)) + b.drain()
        return [x.batch_id for x in out]

    ids = run()
    assert ids == run()
    assert len(set(ids)) == len(ids) == 4
    assert ids[0] == "gw1:ap-south:premium:1"


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 1)), min_size=1, max_size=400))
def test_every_row_comes_out_once_in_the_right_batch(tags: list[tuple[int, int]]) -> None:
    n = len(tags)
    region = np.array([t[0] for t in tags])
    tier = np.array([t[1] for t in tags])
    ids = np.arange(n, dtype=np.uint64)
    b = Batcher(TOPO, ("value",), "p", BatchingConfig(max_readings=7))
    out = b.add(region, tier, ids, np.zeros(n), np.zeros((n, 1)), np.zeros(n)) + b.drain()
    seen = np.concatenate([x.device_id for x in out])
    assert sorted(seen.tolist()) == ids.tolist()
    for batch in out:
        assert len(batch) <= 7
        want = (TOPO.region_code(batch.region), TOPO.tier_code(batch.tier))
        assert all((int(region[i]), int(tier[i])) == want for i in batch.device_id)


def test_rows_screened_while_held_keep_their_mark_through_the_cut() -> None:
    b = Batcher(TOPO, ("value",), "p", BatchingConfig(max_readings=100))
    # Given 150 standard rows of eu-west, the last 50 already screened
    screened = np.arange(150) >= 100
    full = b.add(*rows(150, 0, 1), screened=screened)
    # Then the first (full) batch has none marked, and the rest keeps its marks
    assert [x.screened for x in full] == [None]
    (rest,) = b.cut_region(0, range(1, 2))
    assert rest.screened is not None and rest.screened.all() and len(rest) == 50


def test_cutting_a_region_takes_only_its_tiers_asked_for() -> None:
    b = Batcher(TOPO, ("value",), "p")
    b.add(*rows(10, 0, 0))
    b.add(*rows(10, 0, 1))
    b.add(*rows(10, 1, 1))
    # When eu-west's standard rows are cut, whatever their age
    cut = b.cut_region(0, range(1, 2))
    # Then only they are, and the rest stays buffered
    assert [(x.region, x.tier, len(x)) for x in cut] == [("eu-west", "standard", 10)]
    assert b.buffered_readings == 20
