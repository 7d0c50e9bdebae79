"""Maintenance planning: what the beat-driven tick sends, starts, settles and rebooks.

Pure functions over a ``BookState`` (the reservation book, its operation runs and
what a change announces), applied by ``ReservationsStore.update`` atomically:
``plan_tick`` walks the book and says which tries to send (with their due time);
``begin`` and ``finish`` record a try's start and outcome; ``settle`` rebooks a run
that gave up into the next feasible window and raises an alert. A function may run
more than once (an optimistic update retried), so none of them sends or sleeps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from scheduler import defaults
from scheduler.maintenance import Action, OperationRun, RetryPolicy, RunState, drain_slots
from scheduler.reservations import ReservationBook, ReservationConflict
from scheduler.settings import Settings


@dataclass
class BookState:
    """What an ``update`` function sees and changes: the book, runs, and what to announce."""

    book: ReservationBook
    #: reservation id → run record (plain JSON-safe dict); delete a key to drop the run.
    runs: dict[str, dict[str, Any]]
    alerts: list[dict[str, str]] = field(default_factory=list)
    events: list[dict[str, str]] = field(default_factory=list)
    #: region → pre-drain level to publish with this change.
    drain_slots: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class OpOutcome:
    """What one try of an operation did: done, or cut off with a cursor to resume from."""

    done: bool
    cursor: str = ""
    counts: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Dispatch:
    reservation_id: str
    region: str
    try_no: int
    due_ts: float


def retry_policy(settings: Settings) -> RetryPolicy:
    return RetryPolicy(
        max_tries=settings.maintenance_max_tries, backoff_base_s=settings.maintenance_backoff_s
    )


def _record(run: OperationRun, dispatched: int = 0, dispatched_ts: float = 0.0) -> dict[str, Any]:
    return {"run": run.to_dict(), "dispatched": dispatched, "dispatched_ts": dispatched_ts}


def _event(kind: str, run: OperationRun, now_ts: float, **extra: Any) -> dict[str, str]:
    r = run.reservation
    fields = {
        "event": kind,
        "reservation_id": r.reservation_id,
        "region": r.region,
        "operation": r.operation,
        "try": run.tries,
        "at_ts": now_ts,
        **extra,
    }
    return {k: repr(v) if isinstance(v, float) else str(v) for k, v in fields.items()}


def settle(state: BookState, run: OperationRun, now_ts: float) -> None:
    """Rebook a run that gave up into the next feasible window and raise an alert."""
    old = run.reservation
    state.runs.pop(old.reservation_id, None)
    try:
        new, alert = run.settle(state.book, now_ts)
    except ReservationConflict as exc:
        state.alerts.append(
            {
                "kind": "maintenance_failed",
                "region": old.region,
                "operation": old.operation,
                "reservation_id": old.reservation_id,
                "reason": f"{run.last_error}; {exc}",
                "at_ts": repr(now_ts),
            }
        )
        return
    state.runs[new.reservation_id] = _record(run.resumed_in(new))
    state.alerts.append(
        {
            "kind": "maintenance_rebooked",
            "region": alert.region,
            "operation": alert.operation,
            "reservation_id": alert.reservation_id,
            "reason": alert.reason,
            "rebooked_as": alert.rebooked_as,
            "rebooked_start_ts": repr(alert.rebooked_start_ts),
            "at_ts": repr(alert.at_ts),
        }
    )
    state.events.append(_event("rebooked", run, now_ts, rebooked_as=new.reservation_id))


def plan_tick(
    state: BookState,
    now_ts: float,
    policy: RetryPolicy,
    arm_ahead_s: float = defaults.MAINTENANCE_ARM_AHEAD_S,
    lead_s: float = defaults.MAINTENANCE_PREDRAIN_LEAD_S,
) -> list[Dispatch]:
    """One tick over the book: tries to send, runs to settle, drain levels to publish."""
    sends: list[Dispatch] = []
    for r in state.book.list():
        rid = r.reservation_id
        rec = state.runs.get(rid)
        run = OperationRun.from_dict(rec["run"]) if rec else OperationRun(r, policy)
        if run.state is RunState.RUNNING:
            if now_ts >= run.cutoff_ts + defaults.MAINTENANCE_STOP_GRACE_S:
                settle(state, run.tick(now_ts), now_ts)
            continue
        ticked = run.tick(now_ts)
        if ticked.needs_rebook:
            settle(state, ticked, now_ts)
            continue
        if ticked.state.terminal or run.next_action(now_ts + arm_ahead_s) is not Action.RUN:
            continue
        due_ts = run.next_try_ts if run.state is RunState.BACKING_OFF else r.start_ts
        assert due_ts is not None
        try_no = run.tries + 1
        sent = int(rec["dispatched"]) if rec else 0
        lost = (
            now_ts >= due_ts + defaults.MAINTENANCE_REDISPATCH_AFTER_S
            and rec is not None
            and (now_ts - float(rec["dispatched_ts"]) >= defaults.MAINTENANCE_REDISPATCH_AFTER_S)
        )
        if sent < try_no or lost:
            state.runs[rid] = _record(run, try_no, now_ts)
            sends.append(Dispatch(rid, r.region, try_no, due_ts))
    for region in state.book.budget_slots_by_region:
        state.drain_slots[region] = drain_slots(now_ts, state.book, region, lead_s)
    for gone in state.book.prune(now_ts - defaults.MAINTENANCE_HISTORY_S):
        state.runs.pop(gone.reservation_id, None)
    return sends


def begin(
    state: BookState, reservation_id: str, try_no: int, now_ts: float
) -> OperationRun | float | None:
    """Start try ``try_no``: the started run, seconds to wait if it is early, None to skip."""
    rec = state.runs.get(reservation_id)
    if rec is None:
        return None  # cancelled, or already settled
    run = OperationRun.from_dict(rec["run"])
    if run.tries >= try_no:
        return None  # a redelivery of a try that already started
    action = run.next_action(now_ts)
    if action is Action.WAIT:
        due = run.next_try_ts if run.state is RunState.BACKING_OFF else run.reservation.start_ts
        return max(0.0, (due or now_ts) - now_ts)
    if action is not Action.RUN:
        return None
    due_ts = run.next_try_ts if run.state is RunState.BACKING_OFF else run.reservation.start_ts
    started = run.started(now_ts)
    state.runs[reservation_id] = {**rec, "run": started.to_dict()}
    state.events.append(
        _event("started", started, now_ts, due_ts=due_ts, delay_s=now_ts - (due_ts or now_ts))
    )
    return started


def finish(
    state: BookState,
    reservation_id: str,
    try_no: int,
    now_ts: float,
    outcome: OpOutcome | None,
    error: str = "",
) -> None:
    """Record a try's outcome; settle at once when the run gave up."""
    rec = state.runs.get(reservation_id)
    if rec is None:
        return
    run = OperationRun.from_dict(rec["run"])
    if run.state is not RunState.RUNNING or run.tries != try_no:
        return  # the tick already took it as lost
    if outcome is None:
        run = run.failed(now_ts, error)
        state.events.append(_event("failed", run, now_ts, error=error))
    elif outcome.done:
        run = run.succeeded(now_ts)
        state.events.append(_event("succeeded", run, now_ts, **outcome.counts))
    else:
        run = run.progressed(outcome.cursor).tick(max(now_ts, run.cutoff_ts))
        state.events.append(_event("cut_off", run, now_ts, cursor=outcome.cursor))
    state.runs[reservation_id] = {**rec, "run": run.to_dict()}
    if run.needs_rebook:
        settle(state, run, now_ts)
