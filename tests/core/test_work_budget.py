"""Given the budget of work above premium, budgeted work takes at most its share plus a burst."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from scheduler.work_budget import WorkBudget


def test_work_starts_within_the_burst_and_waits_once_the_share_is_spent() -> None:
    budget = WorkBudget(share=0.25, burst_s=0.2)
    tat = 0.0
    # Given 0.1 s of work at t=100: the debt is 0.4 s, inside the 0.8 s burst allowance
    tat = budget.charge(tat, 100.0, 0.1)
    assert budget.admits(tat, 100.0)
    # When 0.2 s more is spent at once, the debt (1.2 s) is past the allowance
    tat = budget.charge(tat, 100.0, 0.2)
    assert not budget.admits(tat, 100.0)
    # Then work may start again once the debt is back within the burst
    assert not budget.admits(tat, 100.3)
    assert budget.admits(tat, 100.4)


@given(st.lists(st.tuples(st.floats(0, 0.5), st.floats(0, 0.3)), min_size=1, max_size=200))
def test_admitted_work_never_exceeds_the_share_of_elapsed_time_plus_one_burst(
    steps: list[tuple[float, float]],
) -> None:
    budget = WorkBudget(share=0.25, burst_s=0.2)
    now, tat, spent = 0.0, 0.0, 0.0
    for gap_s, cost_s in steps:
        now += gap_s
        if budget.admits(tat, now):
            tat = budget.charge(tat, now, cost_s)
            spent += cost_s
            now += cost_s
    # Work admitted is bounded by share x time, plus the burst and the last run's cost
    assert spent <= budget.share * now + budget.burst_s + 0.3 + 1e-9
