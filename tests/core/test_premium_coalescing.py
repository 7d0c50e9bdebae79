"""Given a region whose premium queue is backed up, its due premium batch waits in the
batcher and takes the readings arriving meanwhile; nothing else changes."""

from __future__ import annotations

import pytest
from batcher_rows import rows

from scheduler.batching import Batcher
from scheduler.model import Topology
from scheduler.premium_coalescing import PremiumCoalescing

TOPO = Topology()
POLICY = PremiumCoalescing(queued_messages=3, max_hold_ms=250.0)


class Queues:
    """Premium messages waiting per region code, as the producer reads them."""

    def __init__(self) -> None:
        self.depth = {0: 0, 1: 0, 2: 0}
        self.asked: list[int] = []

    def hold(self, region: int, age_s: float) -> bool:
        self.asked.append(region)
        return POLICY.holds(self.depth[region], age_s)


def test_a_due_premium_batch_coalesces_while_its_queue_is_backed_up() -> None:
    # Given eu-west's premium queue holding three messages
    b, queues = Batcher(TOPO, ("value",), "p"), Queues()
    queues.depth[0] = 3
    b.add(*rows(10, 0, 0, t0=100.0))
    # When its premium readings reach their age limit, and more arrive
    assert b.due(100.030, queues.hold) == []
    b.add(*rows(15, 0, 0, t0=100.040))
    assert b.due(100.080, queues.hold) == []
    # Then once the queue is short again they all go out in one batch
    queues.depth[0] = 2
    out = b.due(100.090, queues.hold)
    assert [(x.region, x.tier, len(x)) for x in out] == [("eu-west", "premium", 25)]
    assert b.buffered_readings == 0


def test_no_premium_reading_is_held_past_the_longest_hold() -> None:
    b, queues = Batcher(TOPO, ("value",), "p"), Queues()
    queues.depth[0] = 50
    b.add(*rows(10, 0, 0, t0=100.0))
    assert b.due(100.200, queues.hold) == []
    out = b.due(100.250, queues.hold)
    assert [(x.tier, len(x)) for x in out] == [("premium", 10)]


def test_other_regions_and_other_tiers_flush_on_age_as_before() -> None:
    # Given only eu-west backed up
    b, queues = Batcher(TOPO, ("value",), "p"), Queues()
    queues.depth[0] = 10
    b.add(*rows(10, 0, 0, t0=100.0))
    b.add(*rows(10, 1, 0, t0=100.0))
    b.add(*rows(10, 0, 1, t0=100.0))
    # Then us-east's premium leaves at 25 ms and eu-west's standard at 250 ms
    assert [(x.region, x.tier) for x in b.due(100.026, queues.hold)] == [("us-east", "premium")]
    assert [(x.region, x.tier) for x in b.due(100.251, queues.hold)] == [
        ("eu-west", "premium"),
        ("eu-west", "standard"),
    ]
    # And the hold is asked about premium buffers only
    assert set(queues.asked) == {0, 1}


def test_a_full_premium_batch_is_never_held() -> None:
    b, queues = Batcher(TOPO, ("value",), "p"), Queues()
    queues.depth[0] = 10
    full = b.add(*rows(5_000, 0, 0, t0=100.0))
    assert [(x.tier, len(x)) for x in full] == [("premium", 5_000)]


@pytest.mark.parametrize(
    ("queued", "age_s", "held"),
    [(0, 0.03, False), (2, 0.03, False), (3, 0.03, True), (3, 0.249, True), (3, 0.25, False)],
)
def test_the_policy_holds_only_behind_a_backlog_and_within_the_longest_hold(
    queued: int, age_s: float, held: bool
) -> None:
    assert POLICY.holds(queued, age_s) is held


def test_impossible_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        PremiumCoalescing(queued_messages=0)
    with pytest.raises(ValueError):
        PremiumCoalescing(refresh_ms=0)
