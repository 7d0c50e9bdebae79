"""What placement needs to know about regions, read from Redis in one go.

Heartbeats (written by region workers), queue depths (LLEN of each region's
data queues on that region's broker) and the maintenance pre-drain level
(written by the maintenance tick). Callers cache the snapshot; nothing here is
meant to run per reading.

Heartbeats are kept per role, because a region's roles drain different queues: the
data role (a worker draining every data queue: anomaly, screening, routine) and the
premium lane (premium and its screening only). A live lane beside a dead data worker
drains premium work and nothing else, so it must not make the region look able to
take standard or screening work (``ingest.placement`` judges each tier by the roles
that drain it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import redis

from scheduler.health import RegionHealth
from scheduler.model import DATA_QUEUE_KINDS, queue_name
from stores.keys import Keys
from stores.queue_depth import queue_depths

#: Queues that hold readings waiting for a region's data workers.
DATA_KINDS: tuple[str, ...] = DATA_QUEUE_KINDS
#: The roles that heartbeat (``workers.profiles`` names): data worker, premium lane.
DATA_ROLE = "data"
LANE_ROLE = "premium"
HEARTBEAT_ROLES: tuple[str, ...] = (DATA_ROLE, LANE_ROLE)


def text(raw: bytes | str) -> str:
    """A Redis reply field as text, whether the client decodes responses or not."""
    return raw.decode() if isinstance(raw, bytes) else raw


@dataclass(frozen=True)
class RegionSnapshot:
    """Last heartbeat (data role), queued messages and maintenance drain level per region,
    and the last beat of each region's premium lane."""

    heartbeat_ts: Mapping[str, float]
    queued_messages: Mapping[str, int]
    drain_slots: Mapping[str, int]
    lane_heartbeat_ts: Mapping[str, float] = field(default_factory=dict)


class HealthStore:
    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        regions: Sequence[str],
        broker_clients: Mapping[str, redis.Redis] | None = None,
        kinds: Sequence[str] = DATA_KINDS,
    ) -> None:
        self.client = client
        self.keys = keys
        self.regions = tuple(regions)
        self.kinds = tuple(kinds)
        # A region with its own broker keeps its queues there; the rest share the state Redis.
        self.broker_clients = dict(broker_clients or {})

    def _key(self, role: str) -> str:
        if role == DATA_ROLE:
            return self.keys.heartbeats
        if role == LANE_ROLE:
            return self.keys.lane_heartbeats
        raise ValueError(f"no heartbeat for role {role!r}; expected one of {HEARTBEAT_ROLES}")

    def beat(self, regions: Sequence[str], now_ts: float, role: str = DATA_ROLE) -> None:
        """These regions are served now by a worker of ``role`` whose pool takes work."""
        if regions:
            self.client.hset(self._key(role), mapping={r: repr(now_ts) for r in regions})

    def heartbeats(self, role: str = DATA_ROLE) -> dict[str, float]:
        raw = self.client.hgetall(self._key(role))
        return {text(k): float(v) for k, v in raw.items()}

    def health(
        self, silence_timeout_s: float = 5.0, now_ts: float | None = None, role: str = DATA_ROLE
    ) -> RegionHealth:
        """A fresh RegionHealth of ``role`` fed with its stored heartbeats (status, tests)."""
        return RegionHealth.from_heartbeats(
            self.heartbeats(role), silence_timeout_s, self.regions, started_ts=now_ts
        )

    def queued_messages(self) -> dict[str, int]:
        """Messages in each region's data queues (every priority list of each)."""
        by_client: dict[int, tuple[redis.Redis, list[str]]] = {}
        for region in self.regions:
            c = self.broker_clients.get(region, self.client)
            by_client.setdefault(id(c), (c, []))[1].append(region)
        depth: dict[str, int] = {}
        for c, regions in by_client.values():
            per_queue = queue_depths(
                c, self.keys, [queue_name(r, kind) for r in regions for kind in self.kinds]
            )
            for region in regions:
                depth[region] = sum(per_queue[queue_name(region, kind)] for kind in self.kinds)
        return depth

    def snapshot(self) -> RegionSnapshot:
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(self.keys.heartbeats)
        pipe.hgetall(self.keys.maintenance_drain)
        pipe.hgetall(self.keys.lane_heartbeats)
        beats, drain, lanes = pipe.execute()
        return RegionSnapshot(
            heartbeat_ts={text(k): float(v) for k, v in beats.items()},
            queued_messages=self.queued_messages(),
            drain_slots={text(k): int(v) for k, v in drain.items()},
            lane_heartbeat_ts={text(k): float(v) for k, v in lanes.items()},
        )
