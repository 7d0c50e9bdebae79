"""The reservation book and its operation runs, kept in Redis.

The book is one JSON document (``Keys.reservations``); each reservation's
operation run is a field of one hash (``Keys.maintenance_runs``). Every change
goes through ``update``: WATCH both keys, read, apply a function to the
decoded state, write back in MULTI/EXEC, and start again if anyone wrote in
between (optimistic locking). Alerts and events raised by a change are written
in the same transaction, so a rebooking and its alert happen together or not
at all.

Budgets come from configuration, not from the stored document: changing a
region's budget applies to the next booking without a migration.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import redis

from scheduler import defaults
from scheduler.errors import TransientError
from scheduler.maintenance_plan import BookState as BookState  # re-exported: stores name it here
from scheduler.reservations import Reservation, ReservationBook
from scheduler.settings import Settings
from stores.health_store import text
from stores.keys import Keys

T = TypeVar("T")

#: Kept for callers that name it here: the maintenance events stream's length.
STREAM_MAXLEN = defaults.MAINTENANCE_EVENTS_MAXLEN


class BookOperations:
    """Booking, cancelling and listing windows, written once over a store's ``load`` and
    ``update`` (Redis here, in memory in ``stores.memory_control``)."""

    def load(self) -> BookState:
        raise NotImplementedError

    def update(self, change: Callable[[BookState], T]) -> T:
        raise NotImplementedError

    def book(
        self,
        region: str,
        start_ts: float,
        duration_s: float,
        slots: int,
        operation: str,
        now_ts: float,
    ) -> Reservation:
        """Book a window; raises ReservationConflict naming the conflict and the earliest fit."""
        return self.update(
            lambda s: s.book.book(region, start_ts, duration_s, slots, operation, now_ts)
        )

    def cancel(self, reservation_id: str) -> Reservation:
        """Cancel a window and forget its run; its slots return to data processing."""

        def change(s: BookState) -> Reservation:
            s.runs.pop(reservation_id, None)
            return s.book.cancel(reservation_id)

        return self.update(change)

    def list(
        self, region: str | None = None, now_ts: float | None = None
    ) -> builtins.list[Reservation]:
        return self.load().book.list(region, now_ts)


class ReservationStore(BookOperations):
    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        budget_slots_by_region: Mapping[str, int],
        premium_guarantee_by_region: Mapping[str, int],
        max_attempts: int = 100,
    ) -> None:
        self.client = client
        self.keys = keys
        self.budget_slots_by_region = dict(budget_slots_by_region)
        self.premium_guarantee_by_region = dict(premium_guarantee_by_region)
        self.max_attempts = max_attempts

    @classmethod
    def from_settings(cls, client: redis.Redis, settings: Settings) -> ReservationStore:
        return cls(
            client,
            Keys(settings.key_prefix),
            {r: settings.region_budget_slots for r in settings.regions},
            {r: settings.premium_guarantee_slots for r in settings.regions},
        )

    def _decode_book(self, raw: bytes | str | None) -> ReservationBook:
        state: dict[str, Any] = json.loads(raw) if raw else {"next_seq": 1, "reservations": []}
        state["budget_slots_by_region"] = self.budget_slots_by_region
        state["premium_guarantee_by_region"] = self.premium_guarantee_by_region
        return ReservationBook.from_dict(state)

    def load(self) -> BookState:
        """A consistent read of the book and the runs (no change)."""
        pipe = self.client.pipeline(transaction=True)
        pipe.get(self.keys.reservations)
        pipe.hgetall(self.keys.maintenance_runs)
        raw_book, raw_runs = pipe.execute()
        return BookState(
            self._decode_book(raw_book),
            {text(k): json.loads(v) for k, v in raw_runs.items()},
        )

    def update(self, change: Callable[[BookState], T]) -> T:
        """Apply ``change`` to the stored state atomically; retried when someone wrote meanwhile.

        ``change`` may run more than once, so it must only touch the state it is
        given (no sends, no sleeps); do those after ``update`` returns.
        """
        k = self.keys
        for _ in range(self.max_attempts):
            pipe: Any
            with self.client.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(k.reservations, k.maintenance_runs)
                    raw_book = pipe.get(k.reservations)
                    raw_runs = {text(f): v for f, v in pipe.hgetall(k.maintenance_runs).items()}
                    state = BookState(
                        self._decode_book(raw_book),
                        {rid: json.loads(v) for rid, v in raw_runs.items()},
                    )
                    before = json.dumps(state.book.to_dict(), sort_keys=True)
                    result = change(state)
                    pipe.multi()
                    after = json.dumps(state.book.to_dict(), sort_keys=True)
                    if after != before:
                        pipe.set(k.reservations, after)
                    self._write_runs(pipe, raw_runs, state.runs)
                    for alert in state.alerts:
                        pipe.xadd(
                            k.alerts, alert, maxlen=defaults.ALERT_STREAM_MAXLEN, approximate=True
                        )
                    for event in state.events:
                        pipe.xadd(
                            k.maintenance_events,
                            event,
                            maxlen=defaults.MAINTENANCE_EVENTS_MAXLEN,
                            approximate=True,
                        )
                    if state.drain_slots:
                        pipe.hset(k.maintenance_drain, mapping=state.drain_slots)
                    pipe.execute()
                    return result
                except redis.WatchError:
                    continue
        raise TransientError(f"reservation book busy: {self.max_attempts} tries lost a race")

    def _write_runs(
        self,
        pipe: Any,
        before: Mapping[str, bytes | str],
        after: Mapping[str, dict[str, Any]],
    ) -> None:
        gone = [rid for rid in before if rid not in after]
        if gone:
            pipe.hdel(self.keys.maintenance_runs, *gone)
        changed = {}
        for rid, record in after.items():
            encoded = json.dumps(record, sort_keys=True)
            old = before.get(rid)
            if old is None or text(old) != encoded:
                changed[rid] = encoded
        if changed:
            pipe.hset(self.keys.maintenance_runs, mapping=changed)

    def drain_levels(self) -> dict[str, int]:
        """The pre-drain level per region, as last published by the maintenance tick."""
        raw: Any = self.client.hgetall(self.keys.maintenance_drain)
        return {text(k): int(v) for k, v in raw.items()}

    def events(self, count: int = 1_000) -> builtins.list[dict[str, str]]:
        """Maintenance events, oldest first."""
        entries: Any = self.client.xrange(self.keys.maintenance_events, count=count)
        return [{text(f): text(v) for f, v in fields.items()} for _id, fields in entries]
