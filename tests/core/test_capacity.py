"""The capacity ledger: guarantees, minimums, burst, maintenance, the rest by demand."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler.capacity import CapacityBudget, CapacityLedger, ConsumerGroup, consumer_share
from scheduler.errors import ConfigError
from scheduler.model import QUEUE_ORDER, WorkClass

M, A, S, P, D = (
    WorkClass.MAINTENANCE,
    WorkClass.ANOMALY,
    WorkClass.SCREEN,
    WorkClass.PREMIUM,
    WorkClass.STANDARD,
)

BUDGET = CapacityBudget(
    total_slots=20,
    premium_guarantee_slots=6,
    standard_min_slots=3,
    anomaly_burst_slots=4,
    screen_min_slots=2,
)


def demand(
    anomaly: int = 0, screen: int = 0, premium: int = 0, standard: int = 0
) -> dict[WorkClass, int]:
    return {A: anomaly, S: screen, P: premium, D: standard}


@pytest.mark.parametrize(
    ("wanted", "maintenance", "expected"),
    [
        # everyone fits: everyone gets what they ask
        (demand(1, 2, 3, 4), 0, {M: 0, A: 1, S: 2, P: 3, D: 4}),
        # standard overload: premium keeps all it asks within the rest
        (demand(0, 2, 6, 100), 0, {M: 0, A: 0, S: 2, P: 6, D: 12}),
        # premium overload: standard keeps its minimum share
        (demand(0, 0, 100, 100), 0, {M: 0, A: 0, S: 0, P: 17, D: 3}),
        # idle premium guarantee is lent to standard
        (demand(0, 0, 0, 100), 0, {M: 0, A: 0, S: 0, P: 0, D: 20}),
        # and reclaimed when premium work shows up
        (demand(0, 0, 6, 100), 0, {M: 0, A: 0, S: 0, P: 6, D: 14}),
        # anomaly surge: burst first, then the rest in queue order (before routine)
        (demand(100, 0, 100, 100), 0, {M: 0, A: 11, S: 0, P: 6, D: 3}),
        # maintenance off the top, premium guarantee intact, then the burst gets what is left
        (demand(100, 100, 100, 100), 12, {M: 12, A: 2, S: 0, P: 6, D: 0}),
        # a smaller reservation leaves room for every minimum
        (demand(100, 100, 100, 100), 5, {M: 5, A: 4, S: 2, P: 6, D: 3}),
        # maintenance at its ceiling: only the premium guarantee remains
        (demand(100, 100, 100, 100), 14, {M: 14, A: 0, S: 0, P: 6, D: 0}),
        # nothing asked: nothing granted
        (demand(), 5, {M: 5, A: 0, S: 0, P: 0, D: 0}),
    ],
)
def test_allocation_table(
    wanted: dict[WorkClass, int], maintenance: int, expected: dict[WorkClass, int]
) -> None:
    assert CapacityLedger(BUDGET).allocate(wanted, maintenance) == expected


def test_maintenance_may_not_take_the_premium_guarantee() -> None:
    with pytest.raises(ConfigError):
        CapacityLedger(BUDGET).allocate(demand(premium=1), maintenance_reserved_slots=15)


@pytest.mark.parametrize(
    "budget_kwargs",
    [
        {"total_slots": 10, "premium_guarantee_slots": 6, "standard_min_slots": 5},
        {"total_slots": -1},
        {"total_slots": 10, "anomaly_burst_slots": -2},
    ],
)
def test_inconsistent_budget_is_rejected(budget_kwargs: dict[str, int]) -> None:
    with pytest.raises(ConfigError):
        CapacityBudget(**budget_kwargs)


@st.composite
def budgets(draw: st.DrawFn) -> CapacityBudget:
    premium, standard, anomaly, screen = (draw(st.integers(0, 20)) for _ in range(4))
    spare = draw(st.integers(0, 40))
    return CapacityBudget(
        total_slots=premium + standard + anomaly + screen + spare,
        premium_guarantee_slots=premium,
        standard_min_slots=standard,
        anomaly_burst_slots=anomaly,
        screen_min_slots=screen,
    )


@st.composite
def cases(draw: st.DrawFn) -> tuple[CapacityBudget, dict[WorkClass, int], int]:
    budget = draw(budgets())
    wanted = {w: draw(st.integers(0, 80)) for w in QUEUE_ORDER}
    maintenance = draw(st.integers(0, budget.total_slots - budget.premium_guarantee_slots))
    return budget, wanted, maintenance


@given(cases())
def test_ledger_invariants(case: tuple[CapacityBudget, dict[WorkClass, int], int]) -> None:
    # Given any consistent budget, demand and allowed maintenance reservation
    budget, wanted, maintenance = case
    # When the ledger allocates
    grants = CapacityLedger(budget).allocate(wanted, maintenance)
    data_grants = sum(grants[w] for w in QUEUE_ORDER)
    # Then maintenance always gets its reservation
    assert grants[M] == maintenance
    # And grants never exceed the budget left after maintenance
    assert data_grants <= budget.total_slots - maintenance
    # And no class gets more than it asked for
    assert all(0 <= grants[w] <= wanted[w] for w in QUEUE_ORDER)
    # And premium always gets its demand up to the guarantee
    assert grants[P] >= min(wanted[P], budget.premium_guarantee_slots)
    # And no slot is left idle while some class still wants one
    if data_grants < budget.total_slots - maintenance:
        assert all(grants[w] == wanted[w] for w in QUEUE_ORDER)


@given(cases())
def test_standard_minimum_holds_whenever_there_is_room(
    case: tuple[CapacityBudget, dict[WorkClass, int], int],
) -> None:
    budget, wanted, maintenance = case
    grants = CapacityLedger(budget).allocate(wanted, maintenance)
    room = (
        budget.total_slots
        - maintenance
        - budget.premium_guarantee_slots
        - budget.anomaly_burst_slots
        - budget.screen_min_slots
    )
    if room >= budget.standard_min_slots:
        assert grants[D] >= min(wanted[D], budget.standard_min_slots)


@given(cases())
def test_anomaly_burst_is_served_before_routine_surplus(
    case: tuple[CapacityBudget, dict[WorkClass, int], int],
) -> None:
    budget, wanted, maintenance = case
    grants = CapacityLedger(budget).allocate(wanted, maintenance)
    room = budget.total_slots - maintenance - budget.premium_guarantee_slots
    if room >= budget.anomaly_burst_slots:
        assert grants[A] >= min(wanted[A], budget.anomaly_burst_slots)


def test_consumer_share_lists_each_class_first_for_its_grant() -> None:
    # Given grants across all classes
    grants = {M: 2, A: 1, S: 0, P: 6, D: 3}
    # When turned into consumer groups
    groups = consumer_share(grants)
    # Then each granted class has that many slots preferring its own queue
    assert groups == [
        ConsumerGroup((M,), 2),
        ConsumerGroup((A, S, P, D), 1),
        ConsumerGroup((P, A, S, D), 6),
        ConsumerGroup((D, A, S, P), 3),
    ]


@given(cases())
def test_consumer_share_covers_every_granted_slot(
    case: tuple[CapacityBudget, dict[WorkClass, int], int],
) -> None:
    budget, wanted, maintenance = case
    grants = CapacityLedger(budget).allocate(wanted, maintenance)
    groups = consumer_share(grants)
    assert sum(g.slots for g in groups) == sum(grants.values())
    assert all((M in g.queues) == (g.queues == (M,)) for g in groups)
