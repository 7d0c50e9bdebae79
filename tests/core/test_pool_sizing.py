"""A worker's pool target: its share of the region's slots, under a maintenance pre-drain."""

from __future__ import annotations

import pytest

from scheduler.pool_sizing import LocalLoad, PoolFigures, PoolSizer
from scheduler.rate_meter import QueueRates
from scheduler.settings import Settings

REGION_QUEUES = ("eu-west.premium", "eu-west.standard")


def sized(
    depth: int,
    drain: int,
    bounds: tuple[int, int] = (1, 8),
    share: tuple[int, int] = (0, 1),
    premium_guarantee: int = 0,
) -> PoolFigures:
    cfg = Settings(region_budget_slots=8, premium_guarantee_slots=premium_guarantee)
    sizer = PoolSizer(REGION_QUEUES, cfg)
    rates = QueueRates(
        at_ts=1_000.0, interval_s=0.25, depth={"eu-west.standard": depth},
        arrival_rps={}, taken_rps={}, ingested_rps=0.0,
    )  # fmt: skip
    # bounds are the pool's (min, max) slots
    return sizer.size(
        rates, LocalLoad(), 10.0, bounds, share=share, maintenance_reserved_slots=drain
    )


@pytest.mark.parametrize(
    ("depth", "drain", "bounds", "share", "premium_guarantee", "target", "region_slots"),
    [
        # a backlog worth 50 slots fills the budget of 8 when nothing is held back
        (1_000, 0, (1, 8), (0, 1), 0, 8, 8),
        # a window of 3 slots about to start: data gets the other 5
        (1_000, 3, (1, 8), (0, 1), 0, 5, 5),
        # split over two workers, the cap is split too (3 + 2)
        (1_000, 3, (1, 8), (0, 2), 0, 3, 5),
        (1_000, 3, (1, 8), (1, 2), 0, 2, 5),
        # an idle region keeps its minimum: the cap is not binding
        (0, 3, (1, 8), (0, 1), 0, 1, 0),
        # the cap wins over the pool's minimum: maintenance never waits
        (0, 7, (2, 8), (0, 1), 0, 1, 0),
        (1_000, 8, (1, 8), (0, 1), 0, 0, 0),
        # a level larger than the budget allows is clipped at the premium guarantee
        (1_000, 8, (1, 8), (0, 1), 2, 2, 2),
    ],
)
def test_the_pre_drain_level_caps_data_pools(
    depth: int,
    drain: int,
    bounds: tuple[int, int],
    share: tuple[int, int],
    premium_guarantee: int,
    target: int,
    region_slots: int,
) -> None:
    # Given a region budget of 8 and a standard backlog, When maintenance holds `drain` slots
    figures = sized(depth, drain, bounds, share, premium_guarantee)
    # Then the pool and the region's data slots fit in what maintenance leaves
    assert (figures.target_slots, figures.region_slots) == (target, region_slots)
    assert figures.maintenance_slots == min(drain, 8 - premium_guarantee)
    if figures.maintenance_slots:
        assert "maintenance holds" in figures.reason
