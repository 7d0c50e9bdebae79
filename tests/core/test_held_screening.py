"""Given held readings and a budget earned on admission, what is screened while held."""

from __future__ import annotations

import numpy as np
import pytest

from scheduler.held_screening import HeldScreenBudget, device_order, pick_held


def test_the_budget_is_earned_per_admitted_reading_and_may_be_overdrawn_by_a_window() -> None:
    budget = HeldScreenBudget(per_admitted=0.5, window_s=1.0)
    # Given 1,000 readings admitted in region 0
    budget.earn(0, 1_000, now_ts=10.0)
    # Then region 0 has 500 readings of credit and as much again of overdraft; region 1 none
    assert budget.available(1, now_ts=10.0) == 0
    assert budget.available(0, now_ts=10.0) == 1_000
    # When it spends 900: 100 are left; the debt is repaid by later admissions only
    budget.spend(0, 900, now_ts=10.0)
    assert budget.available(0, now_ts=10.0) == pytest.approx(100)
    assert budget.available(0, now_ts=20.0) == pytest.approx(-400, abs=1)
    budget.earn(0, 1_000, now_ts=20.0)
    assert budget.available(0, now_ts=20.0) == pytest.approx(600, abs=1)


def test_unspent_credit_fades_it_is_not_banked_for_a_burst() -> None:
    budget = HeldScreenBudget(per_admitted=0.5, window_s=1.0)
    budget.earn(0, 1_000, now_ts=10.0)
    assert budget.available(0, now_ts=15.0) < 10


def test_a_budget_needs_a_positive_window() -> None:
    with pytest.raises(ValueError, match="window_s"):
        HeldScreenBudget(window_s=0)


def test_within_budget_every_reading_of_a_clean_device_is_picked() -> None:
    rows = np.array([1, 2, 1, 3])
    order = device_order(rows.astype(np.uint64))
    # device 3 has readings waiting unscreened: it takes no part
    clean = np.array([True, True, True, False])
    assert pick_held(rows, order, clean, budget=10).tolist() == [0, 1, 2]


def test_past_the_budget_whole_devices_go_in_their_fixed_order() -> None:
    # Given three readings of device 1 and one each of devices 2 and 3
    rows = np.array([1, 1, 2, 1, 3])
    order = np.array([5, 5, 1, 5, 9], dtype=np.uint64)
    clean = np.ones(5, dtype=np.bool_)
    # When two may be screened: device 2 (first in order); device 1's three do not fit,
    # and device 3 comes after device 1
    assert pick_held(rows, order, clean, budget=2).tolist() == [2]
    # When four: devices 2 and 1, whole
    assert pick_held(rows, order, clean, budget=4).tolist() == [0, 1, 2, 3]
    assert pick_held(rows, order, clean, budget=0).size == 0


def test_the_device_order_is_fixed_and_spreads_ids() -> None:
    ids = np.arange(1, 1_001, dtype=np.uint64)
    order = device_order(ids)
    assert np.array_equal(order, device_order(ids))
    # consecutive ids are not taken in id order
    assert not np.all(np.diff(order.astype(np.float64)) > 0)
