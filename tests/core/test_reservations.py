"""Reservation book: bookable capacity, conflicts with the earliest start that fits, rebooking."""

from __future__ import annotations

import contextlib
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.errors import ConfigError, PermanentError
from scheduler.reservations import (
    ReservationBook,
    ReservationConflict,
    ReservationNotFound,
)

T0 = 1_700_000_000.0
HOUR = 3600.0


def new_book() -> ReservationBook:
    # eu-west: 8 slots, 4 guaranteed to premium → 4 bookable for maintenance.
    return ReservationBook({"eu-west": 8, "us-east": 6}, {"eu-west": 4, "us-east": 0})


def test_overlapping_bookings_fit_up_to_budget_minus_premium_guarantee() -> None:
    # Given 3 of 4 bookable slots reserved 01:00–03:00
    book = new_book()
    book.book("eu-west", T0 + HOUR, 2 * HOUR, 3, "compact-state", now_ts=T0)
    # When one more slot is booked overlapping, Then it fits
    book.book("eu-west", T0 + 2 * HOUR, HOUR, 1, "trim-streams", now_ts=T0)
    assert book.reserved_slots("eu-west", T0 + 2.5 * HOUR) == 4
    # And another region's capacity is separate
    book.book("us-east", T0 + HOUR, HOUR, 6, "compact-state", now_ts=T0)


def test_conflict_names_the_conflicting_reservations_and_the_earliest_start_that_fits() -> None:
    # Given 3 slots held 01:00–03:00 and 1 slot 02:00–04:00 in eu-west (4 bookable)
    book = new_book()
    a = book.book("eu-west", T0 + HOUR, 2 * HOUR, 3, "compact-state", now_ts=T0)
    b = book.book("eu-west", T0 + 2 * HOUR, 2 * HOUR, 1, "expire-rollups", now_ts=T0)
    # When 2 slots for an hour are asked for at 00:30
    with pytest.raises(ReservationConflict) as caught:
        book.book("eu-west", T0 + 0.5 * HOUR, HOUR, 2, "rebuild-registry", now_ts=T0)
    # Then the error names both holders and the first start that fits: 03:00, when a ends
    err = caught.value
    assert isinstance(err, PermanentError)
    assert err.conflicting == (a,)
    assert err.earliest_start_ts == a.end_ts
    assert a.reservation_id in str(err) and f"{a.end_ts:.0f}" in str(err)
    assert "budget 8 − premium guarantee 4" in str(err)
    # And booking at that start succeeds
    book.book("eu-west", err.earliest_start_ts, HOUR, 2, "rebuild-registry", now_ts=T0)
    assert b.end_ts > err.earliest_start_ts  # it did share the window with b


def test_earliest_start_skips_a_gap_too_short_for_the_window() -> None:
    # Given 3 slots 00:00–01:00 and 3 slots 01:30–02:30 (4 bookable)
    book = new_book()
    book.book("eu-west", T0, HOUR, 3, "a", now_ts=T0)
    late = book.book("eu-west", T0 + 1.5 * HOUR, HOUR, 3, "b", now_ts=T0)
    # When 2 slots for an hour are asked for at 00:00
    with pytest.raises(ReservationConflict) as caught:
        book.book("eu-west", T0, HOUR, 2, "c", now_ts=T0)
    # Then the half-hour gap is skipped: the earliest fit is after the second window
    assert caught.value.earliest_start_ts == late.end_ts


def test_windows_are_half_open_so_back_to_back_bookings_fit() -> None:
    book = new_book()
    first = book.book("eu-west", T0, HOUR, 4, "a", now_ts=T0)
    second = book.book("eu-west", first.end_ts, HOUR, 4, "b", now_ts=T0)
    assert book.active("eu-west", first.end_ts) == [second]


def test_more_slots_than_bookable_never_fits() -> None:
    book = new_book()
    with pytest.raises(ReservationConflict, match="no start fits") as caught:
        book.book("eu-west", T0, HOUR, 5, "a", now_ts=T0)
    assert caught.value.earliest_start_ts is None
    assert book.earliest_fit("eu-west", 5, HOUR, T0) == math.inf


@pytest.mark.parametrize(
    ("region", "start_ts", "duration_s", "slots", "match"),
    [
        ("eu-west", T0 - 1, HOUR, 1, "in the past"),
        ("eu-west", T0, 0.0, 1, "positive"),
        ("eu-west", T0, HOUR, 0, "positive"),
        ("mars", T0, HOUR, 1, "unknown region"),
    ],
)
def test_invalid_bookings_are_refused(region, start_ts, duration_s, slots, match) -> None:
    with pytest.raises(ConfigError, match=match):
        new_book().book(region, start_ts, duration_s, slots, "op", now_ts=T0)


def test_cancel_returns_the_slots() -> None:
    book = new_book()
    r = book.book("eu-west", T0, HOUR, 4, "a", now_ts=T0)
    assert book.cancel(r.reservation_id) == r
    assert book.reserved_slots("eu-west", T0) == 0
    book.book("eu-west", T0, HOUR, 4, "b", now_ts=T0)
    with pytest.raises(ReservationNotFound):
        book.cancel(r.reservation_id)


def test_list_active_and_upcoming() -> None:
    # Given a past, a current and a future window
    book = new_book()
    past = book.book("eu-west", T0, HOUR, 1, "past", now_ts=T0)
    now = book.book("eu-west", T0 + HOUR, HOUR, 1, "now", now_ts=T0)
    soon = book.book("eu-west", T0 + 2.2 * HOUR, HOUR, 1, "soon", now_ts=T0)
    other = book.book("us-east", T0, 3 * HOUR, 1, "other", now_ts=T0)
    at = T0 + 1.5 * HOUR
    # Then each view shows what an operator expects
    assert book.list() == [past, other, now, soon]
    assert book.list("eu-west", now_ts=at) == [now, soon]
    assert book.active("eu-west", at) == [now]
    assert book.upcoming("eu-west", at, within_s=HOUR) == [soon]
    assert book.upcoming("eu-west", at, within_s=0.5 * HOUR) == []
    assert book.prune(at) == [past]


def test_rebook_takes_the_next_feasible_window_after_the_failed_one() -> None:
    # Given a failed 4-slot window 00:00–01:00 and the next hour already fully booked
    book = new_book()
    failed = book.book("eu-west", T0, HOUR, 4, "compact-state", now_ts=T0)
    busy = book.book("eu-west", failed.end_ts, HOUR, 3, "other", now_ts=T0)
    # When rebooked at 00:50
    again = book.rebook(failed, now_ts=T0 + 50 * 60, reason="retries exhausted")
    # Then same slots and duration, next attempt, starting when both windows are over
    assert (again.slots, again.duration_s, again.operation) == (4, HOUR, "compact-state")
    assert again.attempt == failed.attempt + 1
    assert again.start_ts == busy.end_ts
    assert again.rebooked_from == failed.reservation_id
    assert again.reason == "retries exhausted"
    # And rebooking a rebooked window counts on
    assert book.rebook(again, now_ts=again.end_ts, reason="again").attempt == 2


def test_rebook_long_after_the_window_starts_now() -> None:
    book = new_book()
    failed = book.book("eu-west", T0, HOUR, 2, "a", now_ts=T0)
    later = T0 + 5 * HOUR
    assert book.rebook(failed, now_ts=later, reason="x").start_ts == later


def test_book_round_trips_through_json() -> None:
    book = new_book()
    r = book.book("eu-west", T0, HOUR, 2, "a", now_ts=T0)
    book.rebook(r, now_ts=T0, reason="window ended")
    again = ReservationBook.from_dict(json.loads(json.dumps(book.to_dict())))
    assert again.list() == book.list()
    assert again.to_dict() == book.to_dict()
    # ids keep counting after a reload, so no id is reused
    fresh = again.book("us-east", T0, HOUR, 1, "b", now_ts=T0)
    assert fresh.reservation_id not in {x.reservation_id for x in book.list()}


windows = st.lists(
    st.tuples(st.integers(0, 40), st.integers(1, 10), st.integers(1, 4)), max_size=12
)


@settings(max_examples=150, deadline=None)
@given(
    existing=windows,
    slots=st.integers(1, 4),
    duration=st.integers(1, 10),
    not_before=st.integers(0, 40),
)
def test_earliest_fit_is_feasible_and_nothing_earlier_is(existing, slots, duration, not_before):
    # Given whatever bookings fit among random requests (times in whole units)
    book = ReservationBook({"r": 4}, {"r": 0})
    for start, dur, n in existing:
        with contextlib.suppress(ReservationConflict):
            book.book("r", float(start), float(dur), n, "op", now_ts=0.0)
    # Then capacity is never exceeded at any instant
    assert all(book.reserved_slots("r", t + 0.5) <= 4 for t in range(60))
    # When asking for the earliest fit
    fit = book.earliest_fit("r", slots, float(duration), float(not_before))
    # Then booking there succeeds, and booking at any earlier whole start would conflict
    # (with whole-unit events, a fractional start fits only if the next whole one does)
    for start in range(not_before, int(fit)):
        with pytest.raises(ReservationConflict) as caught:
            book.book("r", float(start), float(duration), slots, "probe", now_ts=0.0)
        assert caught.value.earliest_start_ts == fit
    book.book("r", fit, float(duration), slots, "probe", now_ts=0.0)
