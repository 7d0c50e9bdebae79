"""Given held readings and a budget earned on admission, what is screened while held."""

from __future__ import annotations

import numpy as np
import pytest

from scheduler.held_screening import HeldScreenBudget, pick_held


def test_the_budget_is_earned_per_admitted_reading_spent_once_and_fades() -> None:
    budget = HeldScreenBudget(per_admitted=0.5, window_s=1.0)
    # Given 1,000 readings admitted in region 0
    budget.earn(0, 1_000, now_ts=10.0)
    # Then region 0 may screen 500 held readings, region 1 none
    assert budget.spend(1, 100, now_ts=10.0) == 0
    assert budget.spend(0, 400, now_ts=10.0) == 400
    assert budget.spend(0, 400, now_ts=10.0) == 100
    # And credit left unspent fades within a few windows: it is not banked for a burst
    budget.earn(0, 1_000, now_ts=10.0)
    assert budget.credit(0, now_ts=15.0) < 5


def test_a_budget_needs_a_positive_window() -> None:
    with pytest.raises(ValueError, match="window_s"):
        HeldScreenBudget(window_s=0)


def test_within_budget_every_reading_not_screened_before_is_picked() -> None:
    rows = np.array([1, 2, 1, 3])
    ts = np.array([10.0, 10.0, 11.0, 9.0])
    # device 3 already sent a reading at 9.0 to screening
    marks = np.array([-np.inf, -np.inf, -np.inf, 9.0])
    assert pick_held(rows, ts, marks, budget=10).tolist() == [0, 1, 2]


def test_past_the_budget_newest_per_device_first_and_stalest_device_first() -> None:
    # Given three readings of device 1, one of device 2 (screened long ago) and one of
    # device 3 (screened recently)
    rows = np.array([1, 1, 1, 2, 3])
    ts = np.array([1.0, 2.0, 3.0, 2.5, 2.5])
    marks = np.array([0.5, 0.5, 0.5, -5.0, 0.9])
    # When only two may be screened: device 2's (stalest) and device 1's newest
    assert pick_held(rows, ts, marks, budget=2).tolist() == [2, 3]
    # When four: every device's newest, then device 1's second newest
    assert pick_held(rows, ts, marks, budget=4).tolist() == [1, 2, 3, 4]
    assert pick_held(rows, ts, marks, budget=0).size == 0
