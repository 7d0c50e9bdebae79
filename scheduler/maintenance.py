"""The pure part of running maintenance: retries inside the window, cutoff, rebooking, pre-drain.

An ``OperationRun`` is immutable: each event returns the next run, so an
adapter can store it as a plain dict between Celery beat ticks and a simulator
can replay it on a virtual clock. Who runs the operation and how is not here.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from scheduler import defaults
from scheduler.errors import ConfigError, PermanentError
from scheduler.reservations import Reservation, ReservationBook, ReservationNotFound

#: How far ahead of a window data pools start shrinking (one home: ``scheduler.defaults``).
DEFAULT_PRE_DRAIN_LEAD_S = defaults.MAINTENANCE_PREDRAIN_LEAD_S


class InvalidTransition(PermanentError):
    """Raised when an operation run is told something its state does not allow."""


class RunState(enum.Enum):
    """Where an operation stands within its reservation window."""

    PENDING = "pending"  # window not started yet
    RUNNING = "running"
    BACKING_OFF = "backing_off"  # failed, next try scheduled
    SUCCEEDED = "succeeded"
    EXHAUSTED = "exhausted"  # retries ran out inside the window
    CUT_OFF = "cut_off"  # window ended with work left; remainder deferred

    @property
    def terminal(self) -> bool:
        return self in (RunState.SUCCEEDED, RunState.EXHAUSTED, RunState.CUT_OFF)


class Action(enum.Enum):
    """What the adapter should do right now."""

    WAIT = "wait"  # before the window, or backing off
    RUN = "run"  # start (or retry) the operation
    CONTINUE = "continue"  # it is running: let it run
    STOP = "stop"  # cutoff reached: stop the running work, keep its cursor
    DONE = "done"  # terminal; settle it if it needs rebooking


@dataclass(frozen=True)
class RetryPolicy:
    """Retries with exponential backoff, all inside the reservation window."""

    max_tries: int = 3
    backoff_base_s: float = 5.0
    backoff_factor: float = 2.0
    backoff_max_s: float = 300.0
    #: Stop this long before the window's end so stopping itself fits inside it.
    cutoff_margin_s: float = 0.0

    def __post_init__(self) -> None:
        if self.max_tries < 1 or self.backoff_base_s < 0 or self.backoff_factor < 1:
            raise ConfigError(f"invalid retry policy {self}")

    def backoff_s(self, tries: int) -> float:
        """Delay after the ``tries``-th failed try: base, base×factor, … capped."""
        return float(
            min(self.backoff_max_s, self.backoff_base_s * self.backoff_factor ** (tries - 1))
        )


@dataclass(frozen=True)
class MaintenanceAlert:
    """Raised to operators when an operation is rebooked; plain fields for any alert sink."""

    region: str
    operation: str
    reservation_id: str
    reason: str
    rebooked_as: str
    rebooked_start_ts: float
    at_ts: float


@dataclass(frozen=True)
class OperationRun:
    """One operation's progress through its reservation window."""

    reservation: Reservation
    policy: RetryPolicy = RetryPolicy()
    state: RunState = RunState.PENDING
    tries: int = 0
    next_try_ts: float | None = None
    last_error: str = ""
    #: The operation's own resume point (opaque); a rebooked run resumes from it.
    cursor: str = ""

    @property
    def cutoff_ts(self) -> float:
        return self.reservation.end_ts - self.policy.cutoff_margin_s

    @property
    def needs_rebook(self) -> bool:
        return self.state in (RunState.EXHAUSTED, RunState.CUT_OFF)

    def tick(self, now_ts: float) -> OperationRun:
        """Apply what time alone decides: reaching the cutoff ends an unfinished run."""
        if self.state.terminal or now_ts < self.cutoff_ts:
            return self
        reason = f"window ended at {self.cutoff_ts:.0f} after {self.tries} tries"
        if self.last_error:
            reason += f"; last error: {self.last_error}"
        return replace(self, state=RunState.CUT_OFF, next_try_ts=None, last_error=reason)

    def next_action(self, now_ts: float) -> Action:
        run = self.tick(now_ts)
        if run.state.terminal:
            return Action.STOP if self.state is RunState.RUNNING else Action.DONE
        if run.state is RunState.RUNNING:
            return Action.CONTINUE
        if run.state is RunState.PENDING:
            return Action.RUN if now_ts >= run.reservation.start_ts else Action.WAIT
        assert run.next_try_ts is not None
        return Action.RUN if now_ts >= run.next_try_ts else Action.WAIT

    def started(self, now_ts: float) -> OperationRun:
        if self.next_action(now_ts) is not Action.RUN:
            raise InvalidTransition(
                f"{self.reservation.operation} cannot start at {now_ts} in state {self.state.value}"
            )
        return replace(self, state=RunState.RUNNING, tries=self.tries + 1, next_try_ts=None)

    def progressed(self, cursor: str) -> OperationRun:
        """Record the resume point after a chunk, so a cutoff loses no finished work."""
        return replace(self, cursor=cursor)

    def succeeded(self, now_ts: float) -> OperationRun:
        return replace(self, state=RunState.SUCCEEDED, next_try_ts=None, cursor="")

    def failed(self, now_ts: float, error: str) -> OperationRun:
        """A try failed: back off and retry inside the window, else give up for this window."""
        if self.tries >= self.policy.max_tries:
            reason = f"retries exhausted after {self.tries} tries; last error: {error}"
            return replace(self, state=RunState.EXHAUSTED, next_try_ts=None, last_error=reason)
        retry_ts = now_ts + self.policy.backoff_s(self.tries)
        if retry_ts >= self.cutoff_ts:
            return replace(self, last_error=error, next_try_ts=None).tick(self.cutoff_ts)
        return replace(self, state=RunState.BACKING_OFF, next_try_ts=retry_ts, last_error=error)

    def settle(self, book: ReservationBook, now_ts: float) -> tuple[Reservation, MaintenanceAlert]:
        """Rebook a run that gave up, release its remaining window, and say so in an alert.

        The failed window is cancelled when it has not ended, so its slots go
        back to data processing rather than idling until the window's end.
        """
        if not self.needs_rebook:
            raise InvalidTransition(f"run in state {self.state.value} needs no rebooking")
        failed = self.reservation
        new = book.rebook(failed, now_ts, self.last_error)
        if failed.end_ts > now_ts:
            with contextlib.suppress(ReservationNotFound):
                book.cancel(failed.reservation_id)
        alert = MaintenanceAlert(
            region=failed.region,
            operation=failed.operation,
            reservation_id=failed.reservation_id,
            reason=self.last_error,
            rebooked_as=new.reservation_id,
            rebooked_start_ts=new.start_ts,
            at_ts=now_ts,
        )
        return new, alert

    def resumed_in(self, reservation: Reservation) -> OperationRun:
        """A fresh run for the rebooked window that resumes from this run's cursor."""
        return OperationRun(reservation=reservation, policy=self.policy, cursor=self.cursor)

    def to_dict(self) -> dict[str, Any]:
        return {
            "reservation": self.reservation.to_dict(),
            "policy": {
                "max_tries": self.policy.max_tries,
                "backoff_base_s": self.policy.backoff_base_s,
                "backoff_factor": self.policy.backoff_factor,
                "backoff_max_s": self.policy.backoff_max_s,
                "cutoff_margin_s": self.policy.cutoff_margin_s,
            },
            "state": self.state.value,
            "tries": self.tries,
            "next_try_ts": self.next_try_ts,
            "last_error": self.last_error,
            "cursor": self.cursor,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> OperationRun:
        nt = d.get("next_try_ts")
        return cls(
            reservation=Reservation.from_dict(d["reservation"]),
            policy=RetryPolicy(**dict(d["policy"])),
            state=RunState(d["state"]),
            tries=int(d["tries"]),
            next_try_ts=None if nt is None else float(nt),
            last_error=str(d.get("last_error", "")),
            cursor=str(d.get("cursor", "")),
        )


def drain_slots(
    now_ts: float, book: ReservationBook, region: str, lead_s: float = DEFAULT_PRE_DRAIN_LEAD_S
) -> int:
    """Slots data pools must hold back now so every window within ``lead_s`` starts on time.

    The peak of reserved slots over ``[now_ts, now_ts + lead_s]``: slots held by
    active windows plus those of windows about to start, counting a window that
    ends before another starts only once. It is a level, not a delta, so an
    adapter can apply it every tick: data pool limit = budget − drain_slots.
    """
    horizon_ts = now_ts + lead_s
    instants = [now_ts] + [r.start_ts for r in book.upcoming(region, now_ts, lead_s)]
    return max(book.reserved_slots(region, t) for t in instants if t <= horizon_ts)
