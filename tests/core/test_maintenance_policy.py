"""Maintenance runs: retries with backoff inside the window, cutoff, rebook + alert, pre-drain."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.maintenance import (
    Action,
    InvalidTransition,
    OperationRun,
    RetryPolicy,
    RunState,
    drain_slots,
)
from scheduler.reservations import ReservationBook, ReservationConflict

T0 = 1_700_000_000.0
HOUR = 3600.0
POLICY = RetryPolicy(max_tries=3, backoff_base_s=60.0, backoff_factor=2.0, backoff_max_s=600.0)


def book_and_run(duration_s: float = HOUR, slots: int = 2) -> tuple[ReservationBook, OperationRun]:
    book = ReservationBook({"eu-west": 8}, {"eu-west": 4})
    r = book.book("eu-west", T0 + HOUR, duration_s, slots, "compact-state", now_ts=T0)
    return book, OperationRun(r, POLICY)


def test_operation_starts_at_window_start_and_succeeds() -> None:
    _, run = book_and_run()
    start = run.reservation.start_ts
    # Given a pending run, Then it waits until its window opens
    assert run.next_action(start - 1) is Action.WAIT
    assert run.next_action(start) is Action.RUN
    # When it runs and succeeds, Then it is done and needs no rebooking
    run = run.started(start)
    assert run.next_action(start + 10) is Action.CONTINUE
    run = run.succeeded(start + 20)
    assert run.state is RunState.SUCCEEDED and not run.needs_rebook
    assert run.next_action(start + 30) is Action.DONE


@pytest.mark.parametrize(("tries", "backoff_s"), [(1, 60.0), (2, 120.0), (3, 240.0), (5, 600.0)])
def test_backoff_grows_exponentially_up_to_a_cap(tries: int, backoff_s: float) -> None:
    assert POLICY.backoff_s(tries) == backoff_s


def test_failures_back_off_then_exhaust_retries_inside_the_window() -> None:
    # Given a run in a one-hour window
    _book, run = book_and_run()
    t = run.reservation.start_ts
    # When the first two tries fail, Then each retry waits the backoff
    run = run.started(t).failed(t + 1, "redis timeout")
    assert run.state is RunState.BACKING_OFF and run.next_try_ts == t + 61
    assert run.next_action(t + 60) is Action.WAIT
    assert run.next_action(t + 61) is Action.RUN
    run = run.started(t + 61).failed(t + 62, "redis timeout")
    assert run.next_try_ts == t + 182
    # When the third and last try fails, Then retries are exhausted well before the window ends
    run = run.started(t + 182).failed(t + 183, "redis timeout")
    assert run.state is RunState.EXHAUSTED and run.needs_rebook
    assert "retries exhausted after 3 tries" in run.last_error
    assert "redis timeout" in run.last_error


def test_exhausted_run_is_rebooked_with_an_alert_and_its_slots_return_now() -> None:
    # Given a run that exhausted its retries 5 minutes into its window
    book, run = book_and_run()
    failed = run.reservation
    t = failed.start_ts
    run = run.started(t).failed(t + 1, "disk full")
    run = run.started(t + 61).failed(t + 62, "disk full")
    now = t + 300
    run = run.started(t + 182).failed(now, "disk full")
    assert run.state is RunState.EXHAUSTED
    # When settled
    new, alert = run.settle(book, now)
    # Then it is booked again after the failed window, same size, next attempt
    assert new.start_ts >= failed.end_ts
    assert (new.slots, new.duration_s, new.attempt) == (failed.slots, failed.duration_s, 1)
    # And the alert says what, where, why and when it will run again
    assert (alert.region, alert.operation) == ("eu-west", "compact-state")
    assert alert.reservation_id == failed.reservation_id
    assert alert.rebooked_as == new.reservation_id and alert.rebooked_start_ts == new.start_ts
    assert "disk full" in alert.reason
    # And the rest of the failed window goes back to data processing
    assert book.reserved_slots("eu-west", now + 1) == 0


def test_backoff_past_the_window_end_cuts_off_instead_of_retrying_late() -> None:
    # Given a 100 s window whose first try fails 50 s in (next try would be at 110 s)
    _book, run = book_and_run(duration_s=100.0)
    t = run.reservation.start_ts
    run = run.started(t).failed(t + 50, "lock held")
    # Then it does not retry outside the window; it is cut off and needs rebooking
    assert run.state is RunState.CUT_OFF and run.needs_rebook
    assert "window ended" in run.last_error and "lock held" in run.last_error


def test_work_overrunning_the_window_is_stopped_and_the_rest_deferred() -> None:
    # Given a running operation that has compacted up to device 41000
    book, run = book_and_run()
    r = run.reservation
    run = run.started(r.start_ts).progressed("device:41000")
    # When the window ends, Then the adapter is told to stop
    assert run.next_action(r.end_ts - 1) is Action.CONTINUE
    assert run.next_action(r.end_ts) is Action.STOP
    run = run.tick(r.end_ts)
    assert run.state is RunState.CUT_OFF
    # And the remainder is rebooked and resumes from the cursor
    new, alert = run.settle(book, r.end_ts)
    resumed = run.resumed_in(new)
    assert resumed.cursor == "device:41000" and resumed.state is RunState.PENDING
    assert resumed.next_action(new.start_ts) is Action.RUN
    assert "window ended" in alert.reason


def test_cutoff_margin_stops_before_the_window_end() -> None:
    book = ReservationBook({"eu-west": 8}, {"eu-west": 4})
    r = book.book("eu-west", T0, HOUR, 1, "trim", now_ts=T0)
    run = OperationRun(r, RetryPolicy(cutoff_margin_s=30.0)).started(T0)
    assert run.next_action(r.end_ts - 31) is Action.CONTINUE
    assert run.next_action(r.end_ts - 30) is Action.STOP


def test_invalid_transitions_are_refused() -> None:
    book, run = book_and_run()
    with pytest.raises(InvalidTransition):
        run.started(run.reservation.start_ts - 1)
    with pytest.raises(InvalidTransition):
        run.settle(book, T0)


def test_run_round_trips_through_json() -> None:
    _, run = book_and_run()
    t = run.reservation.start_ts
    run = run.started(t).progressed("k:7").failed(t + 1, "boom")
    again = OperationRun.from_dict(json.loads(json.dumps(run.to_dict())))
    assert again == run


def two_windows() -> ReservationBook:
    # 4 bookable slots: 3 slots 01:00–02:00, then 2 slots 02:00–03:00, then 1 slot 02:30–03:00.
    book = ReservationBook({"eu-west": 8}, {"eu-west": 4})
    book.book("eu-west", T0 + HOUR, HOUR, 3, "a", now_ts=T0)
    book.book("eu-west", T0 + 2 * HOUR, HOUR, 2, "b", now_ts=T0)
    book.book("eu-west", T0 + 2.5 * HOUR, 0.5 * HOUR, 1, "c", now_ts=T0)
    return book


@pytest.mark.parametrize(
    ("at_s", "lead_s", "expected"),
    [
        (0.0, 60.0, 0),  # nothing within the lead yet
        (HOUR - 61, 60.0, 0),  # one second before the lead opens
        (HOUR - 60, 60.0, 3),  # window a starts within the lead: drain now
        (HOUR + 10, 60.0, 3),  # during a
        (2 * HOUR - 30, 60.0, 3),  # a ends as b starts: the peak, not the sum
        (2 * HOUR, 60.0, 2),  # during b only
        (2.5 * HOUR - 60, 60.0, 3),  # b plus c about to start
        (3 * HOUR, 60.0, 0),  # all over: slots return
    ],
)
def test_drain_slots_frees_reserved_slots_by_window_start(at_s, lead_s, expected) -> None:
    assert drain_slots(T0 + at_s, two_windows(), "eu-west", lead_s) == expected


@settings(max_examples=100, deadline=None)
@given(
    starts=st.lists(st.integers(0, 100), min_size=1, max_size=6),
    lead=st.integers(0, 30),
    at=st.integers(0, 130),
)
def test_drain_covers_every_window_starting_within_the_lead(starts, lead, at) -> None:
    # Given 1-slot windows of 10 s at random starts (those that fit)
    book = ReservationBook({"r": 4}, {"r": 0})
    for s in starts:
        with contextlib.suppress(ReservationConflict):
            book.book("r", float(s), 10.0, 1, "op", now_ts=0.0)
    # When draining at `at` with lead `lead`
    drained = drain_slots(float(at), book, "r", float(lead))
    # Then it covers what is held at any instant up to the horizon, and never more
    levels = [book.reserved_slots("r", at + k / 2) for k in range(2 * lead + 1)]
    assert drained == max(levels)
