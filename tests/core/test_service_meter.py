"""The measured service rate: tasks a busy slot finishes per second."""

from __future__ import annotations

import pytest

from scheduler.service_meter import ServiceMeter


def test_service_rate_keeps_the_prior_until_enough_work_was_timed() -> None:
    meter = ServiceMeter(prior_rps=10.0)
    meter.update(0, 0.0)
    # 4 tasks in 0.2 task-seconds: too little evidence yet
    assert meter.update(4, 0.2) == 10.0
    # 25 tasks in 0.5 task-seconds: 50 tasks/s per busy slot
    assert meter.update(25, 0.5) == pytest.approx(50.0)
    # then new measurements are blended, not swapped in
    assert meter.update(45, 1.5) == pytest.approx(35.0)


def test_many_short_tasks_are_enough_evidence() -> None:
    meter = ServiceMeter(prior_rps=10.0)
    meter.update(0, 0.0)
    # 60 tasks of 5 ms each: 0.3 task-seconds, but 60 tasks
    assert meter.update(60, 0.3) == pytest.approx(200.0)


def test_a_restarted_meter_reads_as_no_progress() -> None:
    meter = ServiceMeter(prior_rps=10.0)
    meter.update(100, 9.0)
    assert meter.update(0, 0.0) == 10.0
