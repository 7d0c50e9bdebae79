"""A region cut off and healed, with real workers on a real Redis (see bench/partition.py).

Given two regions (eu-west on its own broker) with one data worker each and
the regional placer, when the TCP link between eu-west's worker and Redis is
blackholed (the worker keeps running; its heartbeats stop arriving) while
readings keep coming, then eu-west devices allowed in us-east fail over there,
eu-west-locked devices wait in eu-west's queue, and once the link heals the
same worker drains them, everything processed exactly once.
"""

from __future__ import annotations

import pytest

from bench.partition import partition_scenario

pytestmark = pytest.mark.integration


def test_partition_fails_over_inside_residency_and_drains_after_healing(
    redis_server: str, key_prefix: str
) -> None:
    # Given / When: normal operation, then eu-west's network link cut, then healed
    out = partition_scenario(redis_server, key_prefix, devices=10_000, readings_per_phase=6_000)
    part, healed = out["partition"], out["after_heal"]
    print(out)
    # Then the cut was the network's: the worker process lived through it and drained after
    assert part["worker_alive_through_cut"] is True
    assert part["worker_same_process_after_heal"] is True
    # Then in normal operation every reading stays in its home region
    assert out["normal"]["home_share"] == 1.0
    # And during the partition, eu-west readings either failed over or wait at home
    assert part["failed_over_to_kept_region"] > 0
    assert (
        part["failed_over_to_kept_region"] + part["expected_waiting_locked"]
        == (part["from_cut_region"])
    )
    # And exactly the region-locked ones wait in eu-west's broker queue, nothing else
    assert part["waiting_in_cut_region_queue"] == part["expected_waiting_locked"] > 0
    assert part["waiting_not_locked"] == 0
    # And no batch was published to a region its devices may not be processed in
    assert out["outside_allowed"] == 0
    # And after healing, counts match: processed + dead-lettered == ingested, once each
    assert healed["processed"] + healed["dead_lettered"] == healed["ingested"] == 12_000
    assert healed["rollup_count"] == healed["processed"]
    assert healed["lost"] == 0
