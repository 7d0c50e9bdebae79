"""In-memory twins of the control-plane stores: reservations, region health, pool
heartbeats and the work budget. Same contracts as the Redis stores (the contract
suite in tests/stores/contract runs both); one lock each stands in for MULTI/EXEC.
"""

from __future__ import annotations

import builtins
import copy
import json
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from typing import TypeVar

from scheduler import defaults
from scheduler.health import RegionHealth
from scheduler.maintenance_plan import BookState
from scheduler.model import queue_name
from scheduler.reservations import ReservationBook
from scheduler.settings import Settings
from scheduler.work_budget import WorkBudget
from stores.health_store import (
    DATA_KINDS,
    DATA_ROLE,
    HEARTBEAT_ROLES,
    LANE_ROLE,
    RegionSnapshot,
)
from stores.pool_heartbeats import PoolBeat
from stores.protocols import QueueDepthRead
from stores.reservation_store import BookOperations

T = TypeVar("T")


class MemoryReservationStore(BookOperations):
    """The reservation book of one process; ``update`` runs its change under a lock."""

    def __init__(
        self,
        budget_slots_by_region: Mapping[str, int],
        premium_guarantee_by_region: Mapping[str, int],
    ) -> None:
        self.budget_slots_by_region = dict(budget_slots_by_region)
        self.premium_guarantee_by_region = dict(premium_guarantee_by_region)
        self._lock = threading.Lock()
        self._book: str | None = None
        self._runs: dict[str, str] = {}
        self._drain: dict[str, int] = {}
        self.alerts: list[dict[str, str]] = []
        self._events: list[dict[str, str]] = []

    @classmethod
    def from_settings(cls, settings: Settings) -> MemoryReservationStore:
        return cls(
            {r: settings.region_budget_slots for r in settings.regions},
            {r: settings.premium_guarantee_slots for r in settings.regions},
        )

    def _state(self) -> BookState:
        doc = json.loads(self._book) if self._book else {"next_seq": 1, "reservations": []}
        doc["budget_slots_by_region"] = self.budget_slots_by_region
        doc["premium_guarantee_by_region"] = self.premium_guarantee_by_region
        runs = {rid: json.loads(v) for rid, v in self._runs.items()}
        return BookState(ReservationBook.from_dict(doc), runs)

    def load(self) -> BookState:
        with self._lock:
            return self._state()

    def update(self, change: Callable[[BookState], T]) -> T:
        with self._lock:
            state = self._state()
            result = change(state)
            self._book = json.dumps(state.book.to_dict(), sort_keys=True)
            self._runs = {rid: json.dumps(r, sort_keys=True) for rid, r in state.runs.items()}
            self.alerts = (self.alerts + state.alerts)[-defaults.ALERT_STREAM_MAXLEN :]
            self._events = (self._events + state.events)[-defaults.MAINTENANCE_EVENTS_MAXLEN :]
            self._drain.update(state.drain_slots)
            return result

    def drain_levels(self) -> dict[str, int]:
        with self._lock:
            return dict(self._drain)

    def events(self, count: int = 1_000) -> builtins.list[dict[str, str]]:
        with self._lock:
            return copy.deepcopy(self._events[:count])


class MemoryHealthStore:
    """Region heartbeats, queued messages and drain levels of one process."""

    def __init__(
        self,
        regions: Sequence[str],
        depth: QueueDepthRead,
        drain_levels: Callable[[], Mapping[str, int]] = dict,
        kinds: Sequence[str] = DATA_KINDS,
    ) -> None:
        self.regions = tuple(regions)
        self.kinds = tuple(kinds)
        self.depth = depth
        self.drain_levels = drain_levels
        self._lock = threading.Lock()
        self._beats: dict[str, dict[str, float]] = {role: {} for role in HEARTBEAT_ROLES}

    def _role(self, role: str) -> dict[str, float]:
        if role not in self._beats:
            raise ValueError(f"no heartbeat for role {role!r}; expected one of {HEARTBEAT_ROLES}")
        return self._beats[role]

    def beat(self, regions: Sequence[str], now_ts: float, role: str = DATA_ROLE) -> None:
        with self._lock:
            self._role(role).update(dict.fromkeys(regions, now_ts))

    def heartbeats(self, role: str = DATA_ROLE) -> dict[str, float]:
        with self._lock:
            return dict(self._role(role))

    def health(
        self, silence_timeout_s: float = 5.0, now_ts: float | None = None, role: str = DATA_ROLE
    ) -> RegionHealth:
        return RegionHealth.from_heartbeats(
            self.heartbeats(role), silence_timeout_s, self.regions, started_ts=now_ts
        )

    def queued_messages(self) -> dict[str, int]:
        queues = [queue_name(r, kind) for r in self.regions for kind in self.kinds]
        per_queue = self.depth.depths(queues)
        return {r: sum(per_queue[queue_name(r, kind)] for kind in self.kinds) for r in self.regions}

    def snapshot(self) -> RegionSnapshot:
        return RegionSnapshot(
            heartbeat_ts=self.heartbeats(),
            queued_messages=self.queued_messages(),
            drain_slots=dict(self.drain_levels()),
            lane_heartbeat_ts=self.heartbeats(LANE_ROLE),
        )


class MemoryPoolHeartbeats:
    """Pool beats of the workers in this process (``stores.pool_heartbeats``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._beats: dict[str, PoolBeat] = {}

    def exchange(self, beat: PoolBeat) -> dict[str, PoolBeat]:
        # A round trip through the stored form, as the Redis hash's JSON would be.
        stored = PoolBeat(**json.loads(json.dumps(asdict(beat))))
        with self._lock:
            self._beats[beat.node] = stored
            return dict(self._beats)

    def read(self) -> dict[str, PoolBeat]:
        with self._lock:
            return dict(self._beats)

    def forget(self, node: str) -> None:
        with self._lock:
            self._beats.pop(node, None)


class MemoryWorkBudgetStore:
    """Each region's theoretical arrival time (``scheduler.work_budget``) in this process."""

    def __init__(self, budget: WorkBudget | None = None) -> None:
        self.budget = budget or WorkBudget()
        self._lock = threading.Lock()
        self._tat: dict[str, float] = {}

    def admits(self, region: str, now_ts: float) -> bool:
        with self._lock:
            return self.budget.admits(self._tat.get(region, 0.0), now_ts)

    def charge(self, region: str, now_ts: float, cost_s: float) -> None:
        debt_s = max(0.0, cost_s) / self.budget.share
        with self._lock:
            self._tat[region] = max(self._tat.get(region, 0.0), now_ts) + debt_s
