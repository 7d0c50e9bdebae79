"""Preemption: who yields to waiting anomaly work, and chunk plans that lose nothing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler.errors import ConfigError
from scheduler.model import WorkClass
from scheduler.preemption import PreemptionConfig, PreemptionPolicy

A, S, P, D = WorkClass.ANOMALY, WorkClass.SCREEN, WorkClass.PREMIUM, WorkClass.STANDARD

POLICY = PreemptionPolicy(PreemptionConfig(chunk_readings=1_000, max_check_interval_ms=100.0))


@pytest.mark.parametrize(
    ("anomaly_backlog", "free_slots", "task_class", "standard_running", "expected"),
    [
        (0, 0, D, 0, False),  # nothing waiting: carry on
        (1, 1, D, 5, False),  # a free slot will take it
        (1, 0, D, 5, True),  # waiting, no slot: standard yields
        (3, 1, D, 5, True),  # two cannot start: standard yields
        (1, 0, P, 5, False),  # standard covers it: premium carries on
        (3, 0, P, 2, True),  # standard cannot cover all three: premium yields too
        (1, 0, P, 0, True),  # standard already gone: premium yields
        (5, 0, A, 0, False),  # anomaly work never yields
        (5, 0, S, 0, False),  # nor does screening
        (5, 0, WorkClass.MAINTENANCE, 0, False),  # nor maintenance
    ],
)
def test_who_yields(
    anomaly_backlog: int,
    free_slots: int,
    task_class: WorkClass,
    standard_running: int,
    expected: bool,
) -> None:
    assert (
        POLICY.should_yield(anomaly_backlog, free_slots, task_class, standard_running) is expected
    )
    decision = POLICY.decide(anomaly_backlog, free_slots, task_class, standard_running)
    assert decision.yield_now is expected
    assert decision.reason


@given(
    anomaly_backlog=st.integers(0, 50),
    free_slots=st.integers(0, 50),
    standard_running=st.integers(0, 50),
)
def test_premium_never_yields_while_standard_could(
    anomaly_backlog: int, free_slots: int, standard_running: int
) -> None:
    premium = POLICY.should_yield(anomaly_backlog, free_slots, P, standard_running)
    standard = POLICY.should_yield(anomaly_backlog, free_slots, D, standard_running)
    # Standard first: whenever premium is asked to yield, standard is too
    assert not premium or standard


@pytest.mark.parametrize(
    ("anomaly_backlog", "free_slots", "running", "expected"),
    [
        (0, 0, {D: 4, P: 4}, {D: 0, P: 0}),
        (3, 1, {D: 4, P: 4}, {D: 2, P: 0}),
        (6, 0, {D: 4, P: 4}, {D: 4, P: 2}),
        (20, 0, {D: 4, P: 4}, {D: 4, P: 4}),  # cannot free more than run
        (2, 0, {A: 8}, {D: 0, P: 0}),  # anomaly work is not asked
    ],
)
def test_yield_quota(
    anomaly_backlog: int,
    free_slots: int,
    running: dict[WorkClass, int],
    expected: dict[WorkClass, int],
) -> None:
    assert POLICY.yield_quota(anomaly_backlog, free_slots, running) == expected


@pytest.mark.parametrize(
    ("n_readings", "service_rps", "expected"),
    [
        (0, None, []),
        (999, None, [slice(0, 999)]),
        (2_500, None, [slice(0, 1_000), slice(1_000, 2_000), slice(2_000, 2_500)]),
        # 5k readings/s × 100 ms = 500 per chunk keeps checks within the interval
        (1_200, 5_000.0, [slice(0, 500), slice(500, 1_000), slice(1_000, 1_200)]),
        # a fast slot keeps the configured size
        (1_200, 1e6, [slice(0, 1_000), slice(1_000, 1_200)]),
    ],
)
def test_chunk_plan_table(
    n_readings: int, service_rps: float | None, expected: list[slice]
) -> None:
    assert POLICY.plan_chunks(n_readings, service_rps) == expected


@given(
    n_readings=st.integers(0, 20_000),
    chunk_readings=st.integers(1, 3_000),
    service_rps=st.one_of(st.none(), st.floats(1.0, 1e6)),
    data=st.data(),
)
def test_done_chunks_plus_remainder_cover_every_reading_once(
    n_readings: int, chunk_readings: int, service_rps: float | None, data: st.DataObject
) -> None:
    # Given a routine task that processed some chunks before it was told to yield
    policy = PreemptionPolicy(PreemptionConfig(chunk_readings=chunk_readings))
    plan = policy.plan_chunks(n_readings, service_rps)
    done = data.draw(st.integers(0, len(plan)))
    # When it defers the remainder
    rest = policy.remainder(n_readings, done, service_rps)
    # Then processed and deferred readings are each reading exactly once
    covered = [i for s in plan[:done] for i in range(s.start, s.stop)]
    covered += list(range(rest.start, rest.stop))
    assert covered == list(range(n_readings))
    # And no chunk is empty or larger than configured
    assert all(0 < s.stop - s.start <= chunk_readings for s in plan)


@pytest.mark.parametrize("kwargs", [{"chunk_readings": 0}, {"max_check_interval_ms": 0.0}])
def test_bad_preemption_config_is_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        PreemptionConfig(**kwargs)  # type: ignore[arg-type]
