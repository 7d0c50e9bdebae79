"""Parked readings: the same answers from Redis and from memory. Batches come back oldest
first per region, once per claim; what a consumer puts back goes to the head in order;
the claims of a consumer whose lease ran out (or that restarted) go back for others."""

from __future__ import annotations

import time

import numpy as np

from stores.bundle import Stores
from stores.parked_readings import ParkedBatch


def batch(region: str, first_id: int, n: int = 3, offered_ts: float = 100.0) -> ParkedBatch:
    ids = np.arange(first_id, first_id + n, dtype=np.uint64)
    return ParkedBatch(
        region,
        ids,
        np.full(n, 50.0),
        np.arange(n * 2, dtype=np.float64).reshape(n, 2) + first_id,
        np.full(n, offered_ts),
    )


def first_ids(batches: list[ParkedBatch]) -> list[int]:
    return [int(b.device_id[0]) for b in batches]


def test_batches_come_back_oldest_first_per_region_with_their_columns(stores: Stores) -> None:
    parked = stores.parked
    # Given batches parked for two regions
    parked.park([batch("eu", 1), batch("us", 100)])
    parked.park([batch("eu", 10, offered_ts=101.0)])
    assert parked.waiting(["eu", "us"]) == {"eu": 2, "us": 1}
    # When a consumer claims one per region, twice
    one = parked.claim("a", ["eu", "us"], per_region=1)
    two = parked.claim("a", ["eu", "us"], per_region=1)
    # Then it gets each region's oldest first, with every column as parked
    assert first_ids(one) == [1, 100] and first_ids(two) == [10]
    got = one[0]
    assert got.region == "eu"
    assert got.device_id.tolist() == [1, 2, 3]
    assert got.values.tolist() == [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]
    assert got.offered_ts.tolist() == [100.0] * 3 and got.ts.tolist() == [50.0] * 3
    assert parked.waiting(["eu", "us"]) == {"eu": 0, "us": 0}
    # And a batch marked done is gone for good, even after a restart under the same name
    parked.done("a", one + two)
    assert parked.rescue("a", ["eu", "us"], own=True) == 0
    assert parked.claim("b", ["eu", "us"], per_region=5) == []


def test_batches_put_back_go_to_the_head_in_their_order(stores: Stores) -> None:
    parked = stores.parked
    parked.park([batch("eu", 1), batch("eu", 10), batch("eu", 20)])
    claimed = parked.claim("a", ["eu"], per_region=2)
    assert first_ids(claimed) == [1, 10]
    # When ingest took none of the first and part of the second (the rest goes back)
    rest = ParkedBatch("eu", claimed[1].device_id[1:], claimed[1].ts[1:], claimed[1].values[1:],
                       claimed[1].offered_ts[1:])  # fmt: skip
    parked.unclaim("a", [claimed[0], rest])
    parked.done("a", [claimed[1]])
    # Then the next claims find them first, in their order, then the batch parked after
    again = parked.claim("b", ["eu"], per_region=3)
    assert [b.device_id.tolist() for b in again] == [[1, 2, 3], [11, 12], [20, 21, 22]]


def test_a_dead_consumers_claims_go_back_and_a_restarted_one_takes_its_own_back(
    stores: Stores,
) -> None:
    parked = stores.parked
    parked.park([batch("eu", 1), batch("eu", 10), batch("us", 100)])
    # Given consumer a holding a claim under a short lease, and b under a long one
    parked.keep_alive("a", lease_s=0.05)
    parked.keep_alive("b", lease_s=60.0)
    parked.keep_alive("c", lease_s=60.0)
    assert first_ids(parked.claim("a", ["eu"], per_region=1)) == [1]
    assert first_ids(parked.claim("b", ["us"], per_region=1)) == [100]
    # When a's lease runs out
    time.sleep(0.2)
    # Then another consumer's rescue puts a's claim back at the head; b's stays b's
    assert parked.rescue("c", ["eu", "us"]) == 1
    assert first_ids(parked.claim("c", ["eu", "us"], per_region=1)) == [1]
    # And b, restarted under its name, takes its own claim back
    assert parked.rescue("b", ["eu", "us"], own=True) == 1
    assert first_ids(parked.claim("c", ["us"], per_region=1)) == [100]
