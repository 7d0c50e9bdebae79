"""Maintenance reservations booked ahead, in the manner of Slurm's advance reservations.

A region's bookable slots are its budget minus the premium guarantee: premium
latency must hold even while maintenance runs. Windows are half-open
``[start_ts, end_ts)``, so one window may start the instant another ends.
"""

from __future__ import annotations

import builtins
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from scheduler.errors import ConfigError, PermanentError


@dataclass(frozen=True)
class Reservation:
    """Slots held for one maintenance operation in one region over a time window."""

    reservation_id: str
    region: str
    start_ts: float
    duration_s: float
    slots: int
    operation: str
    attempt: int = 0
    #: The reservation this one replaces after a failure, and why it failed.
    rebooked_from: str | None = None
    reason: str = ""

    @property
    def end_ts(self) -> float:
        return self.start_ts + self.duration_s

    def overlaps(self, start_ts: float, end_ts: float) -> bool:
        return self.start_ts < end_ts and start_ts < self.end_ts

    def is_active(self, now_ts: float) -> bool:
        return self.start_ts <= now_ts < self.end_ts

    def describe(self) -> str:
        return (
            f"{self.reservation_id} ({self.operation}, {self.slots} slots, "
            f"[{self.start_ts:.0f}, {self.end_ts:.0f}))"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Reservation:
        return cls(
            reservation_id=str(d["reservation_id"]),
            region=str(d["region"]),
            start_ts=float(d["start_ts"]),
            duration_s=float(d["duration_s"]),
            slots=int(d["slots"]),
            operation=str(d["operation"]),
            attempt=int(d.get("attempt", 0)),
            rebooked_from=None if d.get("rebooked_from") is None else str(d["rebooked_from"]),
            reason=str(d.get("reason", "")),
        )


class ReservationConflict(PermanentError):
    """Raised when a booking does not fit; names what conflicts and the earliest start that fits.

    ``earliest_start_ts`` is None when no start can ever fit (more slots than
    the region can book at all).
    """

    def __init__(
        self,
        message: str,
        conflicting: tuple[Reservation, ...],
        earliest_start_ts: float | None,
    ) -> None:
        super().__init__(message)
        self.conflicting = conflicting
        self.earliest_start_ts = earliest_start_ts


class ReservationNotFound(PermanentError):
    """Raised when cancelling or looking up a reservation id the book does not hold."""


class ReservationBook:
    """All maintenance windows, per region, checked against bookable capacity and each other."""

    def __init__(
        self,
        budget_slots_by_region: Mapping[str, int],
        premium_guarantee_by_region: Mapping[str, int],
    ) -> None:
        self.budget_slots_by_region = dict(budget_slots_by_region)
        self.premium_guarantee_by_region = dict(premium_guarantee_by_region)
        for region, budget in self.budget_slots_by_region.items():
            if not 0 <= self.premium_guarantee_by_region.get(region, 0) <= budget:
                raise ConfigError(f"premium guarantee in {region} must be within its budget")
        self._reservations: dict[str, Reservation] = {}
        self._next_seq = 1

    def bookable_slots(self, region: str) -> int:
        """Budget minus premium guarantee: the most maintenance may ever hold at once."""
        if region not in self.budget_slots_by_region:
            raise ConfigError(
                f"unknown region {region!r}; known: {sorted(self.budget_slots_by_region)}"
            )
        return self.budget_slots_by_region[region] - self.premium_guarantee_by_region.get(region, 0)

    def _in_region(self, region: str) -> list[Reservation]:
        return [r for r in self._reservations.values() if r.region == region]

    def _peak_slots(self, region: str, start_ts: float, end_ts: float) -> int:
        """Most slots reserved at any instant of ``[start_ts, end_ts)``.

        Reserved slots only rise where a window starts, so the peak is at the
        query start or at one of the starts inside the query.
        """
        overlapping = [r for r in self._in_region(region) if r.overlaps(start_ts, end_ts)]
        instants = {start_ts} | {r.start_ts for r in overlapping if r.start_ts > start_ts}
        return max(
            (sum(r.slots for r in overlapping if r.is_active(t)) for t in instants), default=0
        )

    def earliest_fit(
        self, region: str, slots: int, duration_s: float, not_before_ts: float
    ) -> float:
        """Earliest start ≥ ``not_before_ts`` at which the window fits; ``math.inf`` if never.

        Reserved slots only fall where a window ends, so the earliest feasible
        start is ``not_before_ts`` itself or one of those ends.
        """
        if slots > self.bookable_slots(region):
            return math.inf
        ends = {r.end_ts for r in self._in_region(region) if r.end_ts > not_before_ts}
        for start in sorted({not_before_ts} | ends):
            if self._peak_slots(region, start, start + duration_s) + slots <= self.bookable_slots(
                region
            ):
                return start
        return math.inf  # unreachable: after the last end nothing is reserved

    def book(
        self,
        region: str,
        start_ts: float,
        duration_s: float,
        slots: int,
        operation: str,
        now_ts: float,
        *,
        attempt: int = 0,
        rebooked_from: str | None = None,
        reason: str = "",
    ) -> Reservation:
        """Reserve ``slots`` in ``region`` over ``[start_ts, start_ts + duration_s)``.

        Raises ConfigError for a start in the past or non-positive sizes, and
        ReservationConflict when the window does not fit.
        """
        bookable = self.bookable_slots(region)
        if start_ts < now_ts:
            raise ConfigError(f"reservation start {start_ts:.0f} is in the past (now {now_ts:.0f})")
        if duration_s <= 0 or slots <= 0:
            raise ConfigError("reservation duration_s and slots must be positive")
        end_ts = start_ts + duration_s
        peak = self._peak_slots(region, start_ts, end_ts)
        if peak + slots > bookable:
            raise self._conflict(region, start_ts, duration_s, slots, operation, peak)
        reservation = Reservation(
            reservation_id=f"{region}-{self._next_seq}",
            region=region,
            start_ts=float(start_ts),
            duration_s=float(duration_s),
            slots=int(slots),
            operation=operation,
            attempt=attempt,
            rebooked_from=rebooked_from,
            reason=reason,
        )
        self._next_seq += 1
        self._reservations[reservation.reservation_id] = reservation
        return reservation

    def _conflict(
        self, region: str, start_ts: float, duration_s: float, slots: int, operation: str, peak: int
    ) -> ReservationConflict:
        end_ts = start_ts + duration_s
        conflicting = tuple(
            sorted(
                (r for r in self._in_region(region) if r.overlaps(start_ts, end_ts)),
                key=lambda r: (r.start_ts, r.reservation_id),
            )
        )
        budget = self.budget_slots_by_region[region]
        guarantee = self.premium_guarantee_by_region.get(region, 0)
        capacity = (
            f"{region} can book {self.bookable_slots(region)} slots "
            f"(budget {budget} − premium guarantee {guarantee})"
        )
        asked = f"{operation} needs {slots} slots over [{start_ts:.0f}, {end_ts:.0f})"
        earliest = self.earliest_fit(region, slots, duration_s, start_ts)
        if math.isinf(earliest):
            return ReservationConflict(f"{asked}, but {capacity}; no start fits", (), None)
        names = ", ".join(r.describe() for r in conflicting)
        return ReservationConflict(
            f"{asked}, but {capacity} and {peak} are already held by {names}; "
            f"earliest start that fits: {earliest:.0f}",
            conflicting,
            earliest,
        )

    def cancel(self, reservation_id: str) -> Reservation:
        """Remove a reservation; its slots return to data processing at once."""
        try:
            return self._reservations.pop(reservation_id)
        except KeyError:
            raise ReservationNotFound(f"no reservation {reservation_id!r}") from None

    def get(self, reservation_id: str) -> Reservation:
        try:
            return self._reservations[reservation_id]
        except KeyError:
            raise ReservationNotFound(f"no reservation {reservation_id!r}") from None

    def list(
        self, region: str | None = None, now_ts: float | None = None
    ) -> builtins.list[Reservation]:
        """Reservations by start time; with ``now_ts``, only those not yet ended."""
        found = (
            r
            for r in self._reservations.values()
            if (region is None or r.region == region) and (now_ts is None or r.end_ts > now_ts)
        )
        return sorted(found, key=lambda r: (r.start_ts, r.reservation_id))

    def active(self, region: str, now_ts: float) -> builtins.list[Reservation]:
        return [r for r in self.list(region) if r.is_active(now_ts)]

    def reserved_slots(self, region: str, now_ts: float) -> int:
        """Slots maintenance holds in ``region`` right now; data processing may not use them."""
        return sum(r.slots for r in self.active(region, now_ts))

    def upcoming(self, region: str, now_ts: float, within_s: float) -> builtins.list[Reservation]:
        """Reservations starting in ``(now_ts, now_ts + within_s]``: the ones to pre-drain for."""
        return [r for r in self.list(region) if now_ts < r.start_ts <= now_ts + within_s]

    def rebook(self, failed: Reservation, now_ts: float, reason: str) -> Reservation:
        """Book the failed operation again: same slots and duration, next feasible window.

        The new window starts at or after the failed window's end (and not in
        the past), so a rebooked operation never competes with its own window.
        """
        not_before = max(failed.end_ts, now_ts)
        start = self.earliest_fit(failed.region, failed.slots, failed.duration_s, not_before)
        if math.isinf(start):
            raise ReservationConflict(
                f"cannot rebook {failed.describe()}: exceeds what {failed.region} can book",
                (),
                None,
            )
        return self.book(
            failed.region,
            start,
            failed.duration_s,
            failed.slots,
            failed.operation,
            now_ts,
            attempt=failed.attempt + 1,
            rebooked_from=failed.reservation_id,
            reason=reason,
        )

    def prune(self, before_ts: float) -> builtins.list[Reservation]:
        """Forget reservations that ended at or before ``before_ts``; returns them."""
        ended = [r for r in self._reservations.values() if r.end_ts <= before_ts]
        for r in ended:
            del self._reservations[r.reservation_id]
        return ended

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-safe state, so an adapter can keep it in Redis."""
        return {
            "budget_slots_by_region": dict(self.budget_slots_by_region),
            "premium_guarantee_by_region": dict(self.premium_guarantee_by_region),
            "next_seq": self._next_seq,
            "reservations": [r.to_dict() for r in self.list()],
        }

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> ReservationBook:
        book = cls(state["budget_slots_by_region"], state["premium_guarantee_by_region"])
        book._next_seq = int(state["next_seq"])
        for d in state["reservations"]:
            r = Reservation.from_dict(d)
            book._reservations[r.reservation_id] = r
        return book
