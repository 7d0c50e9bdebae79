"""The sweep's clock: silence is measured up to what screening has seen of a tier."""

from __future__ import annotations

import numpy as np

from scheduler.silence_clock import MIXED_TIER, sweep_now_ts

TIERS = ("premium", "standard")
WALL = 1_700_000_000.0


def test_each_device_is_judged_by_its_own_tiers_frontier() -> None:
    # Given premium screened up to the wall and standard 8 s behind (a backlog)
    frontier = {"premium": WALL, "standard": WALL - 8.0}
    # When the clock is taken for a premium and a standard device
    clock = sweep_now_ts(frontier, TIERS, np.array([0, 1]), WALL)
    # Then each is measured up to its own tier's screening
    assert clock.tolist() == [WALL, WALL - 8.0]


def test_a_stopped_stream_is_judged_by_the_wall_after_the_lag_bound() -> None:
    # Given standard's screening stopped 600 s ago (nothing arrives: an outage)
    frontier = {"premium": WALL, "standard": WALL - 600.0}
    # When the clock is taken with a 30 s bound on screening lag
    clock = sweep_now_ts(frontier, TIERS, np.array([1]), WALL, max_lag_s=30.0)
    # Then silence is measured up to 30 s before the wall, so the outage still shows
    assert clock.tolist() == [WALL - 30.0]


def test_a_tier_never_screened_is_judged_by_the_wall_and_mixed_copies_count() -> None:
    # Given only mixed screening copies, 3 s behind; no tier stream of its own
    frontier = {MIXED_TIER: WALL - 3.0}
    clock = sweep_now_ts(frontier, TIERS, np.array([0, 1]), WALL)
    assert clock.tolist() == [WALL - 3.0, WALL - 3.0]
    # and with nothing screened at all, the wall clock
    assert sweep_now_ts({}, TIERS, np.array([1]), WALL).tolist() == [WALL]


def test_a_frontier_ahead_of_the_wall_never_moves_the_clock_past_it() -> None:
    # Given device clocks a little ahead of this worker's (event time > wall)
    clock = sweep_now_ts({"standard": WALL + 2.0}, TIERS, np.array([1]), WALL)
    assert clock.tolist() == [WALL]


def test_a_region_whose_every_stream_stopped_is_judged_by_the_wall_after_the_stall_bound() -> None:
    # Given nothing screened from the region for 15 s, in any tier (its ingest stopped)
    frontier = {"premium": WALL - 15.0, "standard": WALL - 16.0}
    # When the clock is taken with a 10 s stall bound
    clock = sweep_now_ts(frontier, TIERS, np.array([0, 1]), WALL, stall_s=10.0)
    # Then every device's silence is measured up to the wall: the outage shows while it lasts
    assert clock.tolist() == [WALL, WALL]


def test_a_backlog_of_one_tier_while_another_flows_is_no_stall() -> None:
    # Given premium screened up to the wall and standard 15 s behind (queued readings)
    frontier = {"premium": WALL - 0.2, "standard": WALL - 15.0}
    # When the clock is taken with the same 10 s stall bound
    clock = sweep_now_ts(frontier, TIERS, np.array([0, 1]), WALL, stall_s=10.0)
    # Then standard is still judged by its own frontier
    assert clock.tolist() == [WALL - 0.2, WALL - 15.0]


def test_a_region_without_premium_whose_standard_backlog_passes_the_stall_bound_is_no_outage() -> (
    None
):
    # Given a region with no premium stream, standard screened 15 s behind the wall (a
    # backlog: its readings keep flowing, late)
    frontier = {"standard": WALL - 15.0}
    # When the clock is taken with the 10 s stall bound and a 30 s lag bound
    clock = sweep_now_ts(frontier, TIERS, np.array([1]), WALL, max_lag_s=30.0, stall_s=10.0)
    # Then standard is judged by its own frontier, not the wall: nobody looks silent
    assert clock.tolist() == [WALL - 15.0]
    # And only once it lags past the lag bound is its silence taken as real
    late = sweep_now_ts({"standard": WALL - 45.0}, TIERS, np.array([1]), WALL, 30.0, 10.0)
    assert late.tolist() == [WALL - 30.0]
