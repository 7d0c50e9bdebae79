"""What placement needs to know about regions, read from Redis in one go.

Heartbeats (written by region workers), queue depths (LLEN of each region's
data queues on that region's broker) and the maintenance pre-drain level
(written by the maintenance tick). Callers cache the snapshot; nothing here is
meant to run per reading.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import redis

from scheduler.health import RegionHealth
from scheduler.model import DATA_QUEUE_KINDS, queue_name
from stores.keys import Keys
from stores.queue_depth import queue_depths

#: Queues that hold readings waiting for a region's data workers.
DATA_KINDS: tuple[str, ...] = DATA_QUEUE_KINDS


def text(raw: bytes | str) -> str:
    """A Redis reply field as text, whether the client decodes responses or not."""
    return raw.decode() if isinstance(raw, bytes) else raw


@dataclass(frozen=True)
class RegionSnapshot:
    """Last heartbeat, queued messages and maintenance drain level per region."""

    heartbeat_ts: Mapping[str, float]
    queued_messages: Mapping[str, int]
    drain_slots: Mapping[str, int]


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

    def beat(self, regions: Sequence[str], now_ts: float) -> None:
        """These regions are served now (a data worker whose pool takes work)."""
        if regions:
            self.client.hset(self.keys.heartbeats, mapping={r: repr(now_ts) for r in regions})

    def heartbeats(self) -> dict[str, float]:
        raw = self.client.hgetall(self.keys.heartbeats)
        return {text(k): float(v) for k, v in raw.items()}

    def health(self, silence_timeout_s: float = 5.0, now_ts: float | None = None) -> RegionHealth:
        """A fresh RegionHealth fed with every stored heartbeat (for status and tests)."""
        return RegionHealth.from_heartbeats(
            self.heartbeats(), silence_timeout_s, self.regions, started_ts=now_ts
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
        beats, drain = pipe.execute()
        return RegionSnapshot(
            heartbeat_ts={text(k): float(v) for k, v in beats.items()},
            queued_messages=self.queued_messages(),
            drain_slots={text(k): int(v) for k, v in drain.items()},
        )
