"""Given measured drain rates and backlogs, admission holds readings to the wait budget."""

from __future__ import annotations

import pytest

from scheduler.admission import DrainMeter, admits


@pytest.mark.parametrize(
    ("waiting", "drain_rps", "admitted"),
    [
        (0, None, True),  # nothing waiting
        (50_000, None, True),  # nothing measured yet: the first window of a run
        (50_000, 0.0, False),  # a backlog and no drain: workers gone or stalled
        (19_000, 10_000.0, True),  # 1.9 s of work: inside the 2 s budget
        (21_000, 10_000.0, False),  # 2.1 s: past it
    ],
)
def test_admits_while_the_backlog_drains_within_the_budget(
    waiting: float, drain_rps: float | None, admitted: bool
) -> None:
    assert admits(waiting, drain_rps, wait_budget_s=2.0) is admitted


def test_a_budget_must_be_positive() -> None:
    with pytest.raises(ValueError, match="wait budget"):
        admits(1, 1.0, wait_budget_s=0)


def test_the_meter_measures_over_its_window_and_afresh_after_a_pause() -> None:
    meter = DrainMeter(window_s=1.0)
    assert meter.update(0.0, 0) is None
    assert meter.update(0.5, 5_000) == 10_000
    assert meter.update(1.0, 15_000) == 15_000
    # When sampling pauses for longer than the window (an idle producer), the idle spell
    # is not read as a slow drain: nothing is measured until the window fills again
    assert meter.update(10.0, 15_000) is None
    assert meter.update(10.5, 20_000) == 10_000
