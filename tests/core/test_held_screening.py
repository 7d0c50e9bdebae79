"""Given held readings and a budget earned on admission, what is screened while held."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from scheduler.held_screening import (
    HELD_SCREEN_SHARE,
    MAX_CREDIT_WAIT_S,
    PER_ADMITTED,
    UNMEASURED_WINDOWS,
    HeldScreenBudget,
    device_order,
    in_sample,
)


def test_the_sample_shrinks_when_spending_outruns_earning_and_grows_back() -> None:
    budget = HeldScreenBudget(per_admitted=0.5, window_s=2.0)
    # Given a region that has admitted for a window, then 1,000 readings: 500 of budget
    budget.earn(0, 1, now_ts=8.0)
    budget.earn(0, 1_000, now_ts=10.0)
    assert budget.share(0) == 1.0
    # When 1,000 are screened while held: twice the budget
    budget.spend(0, 1_000, now_ts=10.0)
    # Then the region screens fewer of its devices from now on, by the square root of
    # what the budget pays (half the step, so the sample does not swing); region 1 is
    # untouched
    assert budget.share(0) == pytest.approx(0.5**0.5, rel=0.01)
    assert budget.share(1) == 1.0
    # And within the same half window it is not resized again, however lumpy the spending
    budget.spend(0, 5_000, now_ts=10.2)
    assert budget.share(0) == pytest.approx(0.5**0.5, rel=0.01)
    # When admissions earn far more than is spent, the sample grows back
    budget.earn(0, 100_000, now_ts=12.0)
    budget.spend(0, 10, now_ts=12.0)
    assert budget.share(0) == pytest.approx(0.5**0.5 * 1.25, rel=0.01)


def test_held_readings_screened_before_any_admission_keep_every_device_for_a_window() -> None:
    budget = HeldScreenBudget(per_admitted=0.5, window_s=2.0)
    # Given a region whose gateway holds readings before anything was admitted
    for step in range(10):
        # When they are screened while held over the first window
        budget.spend(0, 5_000, now_ts=step * 0.2)
        # Then no device is dropped on that (no evidence of the drain yet)
        assert budget.share(0) == 1.0
    # And once a window has passed with nothing earned, the sample shrinks
    budget.spend(0, 5_000, now_ts=2.0)
    assert budget.share(0) < 1.0


def test_a_budget_needs_a_positive_window() -> None:
    with pytest.raises(ValueError, match="window_s"):
        HeldScreenBudget(window_s=0)


def pick_held(
    order: npt.NDArray[np.uint64], clean: npt.NDArray[np.bool_], share: float
) -> npt.NDArray[np.intp]:
    """What the held screener picks (ingest.held_screener): clean devices of the sample."""
    return np.flatnonzero(clean & in_sample(order, share))


def test_every_reading_of_clean_devices_in_the_sample_is_picked() -> None:
    ids = np.array([1, 2, 1, 3], dtype=np.uint64)
    order = device_order(ids)
    # device 3 has readings waiting unscreened: it takes no part
    clean = np.array([True, True, True, False])
    assert pick_held(order, clean, share=1.0).tolist() == [0, 1, 2]


def test_a_share_of_devices_is_picked_whole_and_the_same_ones_each_time() -> None:
    ids = np.repeat(np.arange(1, 1_001, dtype=np.uint64), 3)
    clean = np.ones(ids.size, dtype=np.bool_)
    picked = pick_held(device_order(ids), clean, share=0.25)
    devices, counts = np.unique(ids[picked], return_counts=True)
    # About a quarter of the devices, each with all three readings
    assert 200 <= devices.size <= 300 and set(counts.tolist()) == {3}
    # And a smaller share picks a subset of the same devices
    fewer = ids[pick_held(device_order(ids), clean, share=0.1)]
    assert set(fewer.tolist()) < set(devices.tolist())


def test_by_default_held_readings_arriving_at_twice_the_admitted_rate_are_all_screened() -> None:
    # Given the default budget, a region admitting 1,000 non-premium readings every
    # 0.1 s while 2,000 more arrive and are held (an offered load of about 3x the drain)
    budget = HeldScreenBudget()
    for step in range(100):
        now = step * 0.1
        budget.earn(0, 1_000, now_ts=now)
        # When every held reading is screened while held
        budget.spend(0, 2_000, now_ts=now)
        # Then the region never drops devices from the sample
        assert budget.share(0) == 1.0


def test_by_default_held_readings_past_the_budget_shrink_the_sample() -> None:
    # Given the default budget and held readings arriving at twice what admissions earn
    budget = HeldScreenBudget()
    for step in range(100):
        budget.earn(0, 1_000, now_ts=step * 0.1)
        # (the devices in the sample are screened while held, the others wait)
        budget.spend(0, round(2 * PER_ADMITTED * 1_000 * budget.share(0)), now_ts=step * 0.1)
    # Then only a share of the devices is screened while held, about what the budget pays
    assert 0.25 <= budget.share(0) <= 0.75


def test_a_measured_screening_cost_sizes_what_admissions_earn() -> None:
    # Given held screening measured at twice routine processing's cost per reading
    budget = HeldScreenBudget()
    budget.follow_cost(2.0)
    # When held readings arrive at what the budget pays at 1:1
    held = round(PER_ADMITTED * 1_000)
    for step in range(100):
        budget.earn(0, 1_000, now_ts=step * 0.1)
        budget.spend(0, round(held * budget.share(0)), now_ts=step * 0.1)
    # Then the same slot-time share pays for about half of them: the sample shrinks
    assert 0.25 <= budget.share(0) <= 0.75
    # And a cheap measured cost lets the same budget screen twice as many
    cheap = HeldScreenBudget()
    cheap.follow_cost(0.5)
    for step in range(100):
        cheap.earn(0, 1_000, now_ts=step * 0.1)
        cheap.spend(0, 2 * held, now_ts=step * 0.1)
        assert cheap.share(0) == 1.0


def test_a_sample_shrunk_to_nothing_grows_back_once_the_budget_allows() -> None:
    budget = HeldScreenBudget(per_admitted=1.0, window_s=2.0)
    # Given a long overload in which held screening outran the earning at every turn
    for step in range(400):
        budget.earn(0, 1, now_ts=step * 0.1)
        budget.spend(0, 1_000, now_ts=step * 0.1)
    assert budget.share(0) < 1e-6
    # When admissions earn far more than the (now tiny) sample spends, for ten seconds
    for step in range(400, 500):
        budget.earn(0, 10_000, now_ts=step * 0.1)
        budget.spend(0, 1, now_ts=step * 0.1)
    # Then the sample has grown back to a useful share
    assert budget.share(0) >= 0.3


def _overload(
    held_per_step: float, steps: int = 300, shares: list[float] | None = None
) -> tuple[HeldScreenBudget, float]:
    """A region's slot under overload, 0.1 s steps: held readings arrive at
    ``held_per_step``; the sample's are screened while held (cost 2, routine 1); the rest
    of the slot time admits readings, each costing routine, plus screening (2) for those
    not screened while held. Returns the budget and held screening's share of the slot
    time in the last step. ``shares``, when given, collects the sample's share per step."""
    budget = HeldScreenBudget()
    budget.follow_cost(2.0)
    screening = 0.0
    for step in range(steps):
        now = step * 0.1
        share = budget.share(0)
        if shares is not None:
            shares.append(share)
        held = held_per_step * share
        screening = min(1_000.0, 2.0 * held)
        cost = 1.0 + 2.0 * (1.0 - share)
        admitted = (1_000.0 - screening) / cost
        budget.earn(0, round(admitted), now, unscreened=round(admitted * (1.0 - share)))
        budget.spend(0, round(held), now)
    return budget, screening / 1_000.0


def test_held_screening_keeps_its_share_of_slot_time_however_few_devices_it_covers() -> None:
    # Given held readings arriving at 800 per 0.1 s, where screening all of them would
    # take 1.6 slots at twice routine's cost
    budget, share_of_slot = _overload(800.0)
    # Then the sample settles where held screening takes about HELD_SCREEN_SHARE of the
    # slot time: admitted readings screened at admission earn for their screening too,
    # so a small sample does not starve its own budget
    assert abs(share_of_slot - HELD_SCREEN_SHARE) <= 0.1
    settled = HELD_SCREEN_SHARE * 1_000 / (2.0 * 800.0)
    assert abs(budget.share(0) - settled) <= 0.1
    # And held readings that fit in that share are all screened while held
    budget, _ = _overload(0.8 * HELD_SCREEN_SHARE * 1_000 / 2.0)
    assert budget.share(0) == 1.0


def test_a_sample_shrunk_by_a_lump_grows_back_to_what_the_budget_pays() -> None:
    budget = HeldScreenBudget(per_admitted=1.0, window_s=2.0)
    # Given a region whose sample a lump of held readings halved
    for step in range(20):
        budget.earn(0, 1_000, now_ts=step * 0.1)
    budget.spend(0, 80_000, now_ts=2.0)
    assert budget.share(0) == pytest.approx(0.5)
    # When the devices in the sample then spend 80 % of the earning (the whole fleet
    # would spend 160 %)
    for step in range(21, 200):
        budget.earn(0, 1_000, now_ts=step * 0.1)
        budget.spend(0, round(1_600 * budget.share(0)), now_ts=step * 0.1)
    # Then the sample grows back to about what the budget pays for (5/8 of the devices)
    assert 0.55 <= budget.share(0) <= 0.7


def test_a_region_closed_to_admission_keeps_earning_from_its_measured_drain() -> None:
    # Given a region whose workers drain 10,000 routine readings/s, measured, while
    # admission stays closed (a backlog from before the drain was measured)
    budget = HeldScreenBudget()
    budget.follow_drain([10_000.0, 0.0])
    for step in range(100):
        now = step * 0.1
        # When held readings arrive at 10,000/s and are all taken on by the sample
        budget.spend(0, round(1_000 * budget.share(0)), now_ts=now)
    # Then none was dropped: the drain earned (2 per routine reading screened at
    # admission, 2 more for that screening) though nothing was admitted
    assert budget.share(0) == 1.0
    # And a region without drain earns nothing: its sample shrinks
    for step in range(100):
        budget.spend(1, 1_000, now_ts=step * 0.1)
    assert budget.share(1) < 0.1


def test_held_copies_go_out_only_as_fast_as_they_are_earned() -> None:
    # Given a region earning 1,000 readings of held screening per 0.1 s
    budget = HeldScreenBudget(per_admitted=1.0)
    sent = 0
    for step in range(200):
        now = step * 0.1
        budget.earn(0, 1_000, now_ts=now)
        # When a 10,000-reading copy is offered every 0.1 s, sent whenever allowed
        if budget.may_send(0, now):
            budget.sent(0, 10_000, now)
            sent += 10_000
    # Then what went out over 20 s is about what was earned (one copy of overdraft)
    assert 200_000 <= sent <= 200_000 + 3 * 10_000


def test_one_lump_of_held_readings_shrinks_the_sample_once_not_at_every_adjustment() -> None:
    budget = HeldScreenBudget(per_admitted=1.0, window_s=2.0)
    # Given a region earning 1,000 readings of held screening per 0.1 s for a window
    for step in range(20):
        budget.earn(0, 1_000, now_ts=step * 0.1)
    # When a lump of 80,000 held readings is taken on (four times the window's earning)
    budget.spend(0, 80_000, now_ts=2.0)
    assert budget.share(0) == pytest.approx(0.5)
    # And then the sample's devices spend 80 % of the earning, for as long as the lump
    # is still part of the window (the whole fleet would spend 160 %)
    shares = []
    for step in range(21, 60):
        budget.earn(0, 1_000, now_ts=step * 0.1)
        budget.spend(0, round(1_600 * budget.share(0)), now_ts=step * 0.1)
        shares.append(budget.share(0))
    # Then the lump halved the sample once: it was not judged again at later adjustments
    assert min(shares) == pytest.approx(0.5)


def test_under_a_steady_overload_the_sample_settles_instead_of_swinging() -> None:
    # Given held readings arriving at 800 per 0.1 s for a minute, past what the budget pays
    shares: list[float] = []
    _overload(800.0, steps=600, shares=shares)
    # Then after the first seconds the sample stays within a narrow band: every swing
    # down drops devices, and a dropped device rejoins only once its held backlog is in
    settled = shares[100:]
    assert max(settled) - min(settled) <= 0.1


def test_spending_past_the_earning_keeps_every_device_while_what_waits_is_within_a_window() -> None:
    budget = HeldScreenBudget(per_admitted=1.0, window_s=2.0)
    # Given a region that earned 20,000 readings of held screening over a window, all sent
    for step in range(20):
        budget.earn(0, 1_000, now_ts=step * 0.1)
    budget.sent(0, 20_000, now_ts=2.0)
    # When a lump of 30,000 is taken on, of which 10,000 still wait for credit (the
    # window, fading, earned about 12,300)
    budget.spend(0, 30_000, now_ts=2.0, waiting=10_000)
    # Then no device is dropped: the next window's credit screens them within 2 s
    assert budget.share(0) == 1.0
    # When more than a window's earning waits for credit
    budget.spend(0, 30_000, now_ts=3.0, waiting=60_000)
    # Then the sample shrinks
    assert budget.share(0) < 1.0


def test_the_sample_shrinks_only_once_what_waits_for_credit_would_wait_past_the_bound() -> None:
    # Given a region earning 10,000 readings of held screening a second, all sent (a
    # fading window of 2 s then holds about 20,000 earned: 2 s of earning)
    budget = HeldScreenBudget(per_admitted=1.0, window_s=2.0)
    for step in range(200):
        budget.earn(0, 1_000, now_ts=step * 0.1)
    budget.sent(0, 200_000, now_ts=20.0)
    earned_rps = 10_000
    wait_s = MAX_CREDIT_WAIT_S - 0.5
    # When a lump is taken on past the earning and what waits would wait under the bound
    # at the rate of earning (longer than a window, so the old rule dropped devices)
    assert wait_s > budget.window_s
    budget.spend(0, 60_000, now_ts=20.0, waiting=wait_s * earned_rps)
    # Then no device is dropped: the coming credit screens them in time
    assert budget.share(0) == 1.0
    # When what waits would wait past it
    budget.spend(0, 60_000, now_ts=21.0, waiting=(MAX_CREDIT_WAIT_S + 1.0) * earned_rps)
    # Then the sample shrinks
    assert budget.share(0) < 1.0


def _after_a_window_of_drain(regions: int) -> HeldScreenBudget:
    """A budget whose regions drained 10,000 readings/s and spent within their earning for
    2.5 s (a window of evidence: their samples are judged from then on)."""
    budget = HeldScreenBudget(per_admitted=1.0, window_s=2.0)
    budget.follow_drain([10_000.0] * regions)
    for step in range(25):
        for region in range(regions):
            budget.spend(region, 1_000, now_ts=step * 0.1, waiting=1_000, oldest_wait_s=0.0)
    return budget


def test_a_drain_held_near_zero_drops_no_device_until_a_reading_has_waited_past_the_bound() -> None:
    # Given two regions whose drain was measured for a window, then falls near zero (work
    # queued above routine, as in a run's first seconds)
    budget = _after_a_window_of_drain(regions=2)
    budget.follow_drain([100.0, 100.0])
    # When held readings keep arriving far past the earning, and what waits for credit
    # would wait past the bound at the window's rate, but none has waited that long yet
    for step in range(25, 55):
        waited_s = (step - 25) * 0.1
        budget.spend(0, 20_000, now_ts=step * 0.1, waiting=400_000, oldest_wait_s=waited_s)
        # (how long it waited unknown: the rule before, on the foreseen wait alone)
        budget.spend(1, 20_000, now_ts=step * 0.1, waiting=400_000)
    # Then no device is dropped: the drain may come back and pay in time
    assert budget.share(0) == 1.0
    assert budget.lowest_share(1) < 1.0
    # When the oldest of them has waited past the bound and the drain has not come back
    budget.spend(0, 20_000, now_ts=6.0, waiting=400_000, oldest_wait_s=MAX_CREDIT_WAIT_S + 0.1)
    # Then the sample shrinks
    assert budget.share(0) < 1.0


def test_no_device_is_dropped_while_screening_held_readings_still_beats_waiting_for_admission() -> (
    None
):
    # Given two regions past their earning, whose held readings have waited past the bound
    # for credit, and whose readings are admitted 12 s after they are first offered
    budget = _after_a_window_of_drain(regions=2)
    budget.follow_drain([100.0, 100.0])
    budget.earn(0, 1_000, now_ts=2.5, oldest_offered_ts=2.5 - 12.0)
    # (region 1 never says when its readings were offered: the rule before)
    budget.earn(1, 1_000, now_ts=2.5)
    for step in range(25, 55):
        for region in (0, 1):
            budget.spend(
                region, 20_000, step * 0.1, waiting=400_000, oldest_wait_s=MAX_CREDIT_WAIT_S + 1
            )
    # Then the region whose dropped devices would wait longer for admission keeps them all
    assert budget.admission_lag_s(0, now_ts=5.5) == 15.0
    assert budget.share(0) == 1.0
    assert budget.share(1) < 1.0
    # And once a reading has waited for credit longer than admission takes, it shrinks
    budget.spend(0, 20_000, now_ts=6.0, waiting=400_000, oldest_wait_s=16.0)
    assert budget.share(0) < 1.0


def test_a_region_draining_nothing_for_a_few_windows_is_judged_without_its_admission_lag() -> None:
    # Given a region whose readings waited 12 s for admission, whose workers then stop:
    # its drain reads 0 from 2.5 s on
    budget = _after_a_window_of_drain(regions=1)
    budget.earn(0, 1_000, now_ts=2.5, oldest_offered_ts=2.5 - 12.0)
    budget.follow_drain([0.0])
    # When held readings keep waiting for credit past the bound
    for step in range(25, 75):
        budget.spend(0, 20_000, step * 0.1, waiting=400_000, oldest_wait_s=MAX_CREDIT_WAIT_S + 1)
        # Then while the drain read zero for less than UNMEASURED_WINDOWS windows, the wait
        # for admission (12 s and more) still keeps every device
        if step * 0.1 - 2.5 < UNMEASURED_WINDOWS * 2.0:
            assert budget.share(0) == 1.0
    # And past them nothing will be admitted: the sample shrinks, its copies stop growing
    assert budget.admission_lag_s(0, now_ts=7.5) == 0.0
    assert budget.share(0) < 1.0


def test_the_admission_lag_follows_the_oldest_reading_admitted_and_grows_while_none_is() -> None:
    budget = HeldScreenBudget()
    assert budget.admission_lag_s(0, now_ts=10.0) == 0.0
    # Given readings admitted at 10 s whose oldest was first offered at 7 s
    budget.earn(0, 500, now_ts=10.0, oldest_offered_ts=7.0)
    assert budget.admission_lag_s(0, now_ts=10.0) == 3.0
    # When nothing is admitted for 2 s, the readings held meanwhile are 2 s older
    assert budget.admission_lag_s(0, now_ts=12.0) == 5.0
    # And admissions of fresh readings bring it back down
    budget.earn(0, 500, now_ts=12.5, oldest_offered_ts=12.4)
    assert budget.admission_lag_s(0, now_ts=12.5) == pytest.approx(0.1)


def test_a_followed_drain_judges_the_sample_only_after_a_window_measured_above_zero() -> None:
    budget = HeldScreenBudget(per_admitted=1.0, window_s=2.0)
    # Given a region whose workers are starting: its drain reads 0 for 3 s
    budget.follow_drain([0.0])
    for step in range(30):
        # When held readings keep arriving past anything earned, waiting for credit
        budget.spend(0, 5_000, now_ts=step * 0.1, waiting=50_000 + 5_000 * step)
        # Then no device is dropped on a drain not measured yet
        assert budget.share(0) == 1.0
    # And once the drain is measured, none is dropped before a window of it
    budget.follow_drain([100_000.0])
    for step in range(30, 49):
        budget.spend(0, 5_000, now_ts=step * 0.1, waiting=200_000)
        assert budget.share(0) == 1.0


def test_a_drain_never_measured_still_judges_the_sample_after_a_few_windows() -> None:
    budget = HeldScreenBudget(per_admitted=1.0, window_s=2.0)
    # Given a region whose workers are gone: its drain reads 0 throughout
    budget.follow_drain([0.0])
    for step in range(80):
        # When held readings keep arriving, all waiting for credit
        budget.spend(0, 5_000, now_ts=step * 0.1, waiting=5_000 * (step + 1))
    # Then the sample shrinks (the budget does not wait for a measurement for ever)
    assert budget.share(0) < 0.5


def test_a_budget_reports_the_smallest_share_and_when_the_sample_first_shrank() -> None:
    budget = HeldScreenBudget(per_admitted=0.5, window_s=2.0)
    # Given a region that never overspent
    budget.earn(0, 1, now_ts=8.0)
    budget.earn(0, 1_000, now_ts=10.0)
    budget.spend(0, 100, now_ts=10.0)
    assert budget.lowest_share(0) == 1.0 and budget.first_shrink_ts(0) is None
    # When it overspends at 11 s (halved) and grows back afterwards
    budget.spend(0, 10_000, now_ts=11.0)
    budget.earn(0, 1_000_000, now_ts=13.0)
    budget.spend(0, 10, now_ts=13.0)
    # Then the report keeps the low point and the first shrink, not where the share ended
    assert budget.share(0) > budget.lowest_share(0) == pytest.approx(0.5)
    assert budget.first_shrink_ts(0) == 11.0
    assert budget.lowest_share(1) == 1.0 and budget.first_shrink_ts(1) is None
