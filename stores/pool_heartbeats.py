"""Worker pool heartbeats: each autoscaler publishes its pool, supervisors and peers read them.

One hash (``Keys.scaling_pools``), field = Celery node name, value = JSON.
Every write also reads the whole hash back in the same round trip, so an
autoscaler learns its peers for free. Each beat says its worker's role: a premium
lane's pool drains premium work only, so it is no peer of the region's data pools
(``pool_share``) and its figures do not size them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import redis

from stores.health_store import DATA_ROLE
from stores.keys import Keys


@dataclass(frozen=True)
class PoolBeat:
    """One worker's pool as its autoscaler last saw it; ``at_ts`` in epoch seconds."""

    node: str
    region: str
    slots: int
    #: Slots running a task at the moment of the beat.
    busy: int
    #: Task-seconds the pool has run since the worker started (for utilisation).
    busy_s: float
    #: Tasks the pool has finished since the worker started.
    finished: int
    #: Messages the worker holds (running or prefetched); a drain waits for 0.
    held: int
    max_slots: int
    min_slots: int
    target_slots: int
    #: Slots the region's consumers should have in total; None before the first figures.
    region_slots: int | None
    service_rps: float
    consuming: bool
    at_ts: float
    #: Why the autoscaler chose ``target_slots``, for operators.
    reason: str = ""
    #: The worker's role (``stores.health_store``: "data", or "premium" for a lane);
    #: a beat written before roles were recorded reads as "data".
    role: str = DATA_ROLE

    def fresh(self, now_ts: float, fresh_s: float) -> bool:
        return now_ts - self.at_ts <= fresh_s


def _parse(node: bytes | str, raw: bytes | str) -> PoolBeat | None:
    try:
        name = node.decode() if isinstance(node, bytes) else node
        return PoolBeat(node=name, **json.loads(raw))
    except (ValueError, TypeError):
        return None


def decode_beats(raw: Mapping[Any, Any]) -> dict[str, PoolBeat]:
    """Beats by node; an unreadable entry (another version, a typo) is skipped."""
    beats = (_parse(node, value) for node, value in raw.items())
    return {b.node: b for b in beats if b is not None}


class PoolHeartbeats:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys

    def exchange(self, beat: PoolBeat) -> dict[str, PoolBeat]:
        """Publish ``beat``; returns every beat, this one included (one round trip)."""
        fields = asdict(beat)
        del fields["node"]
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(self.keys.scaling_pools, beat.node, json.dumps(fields))
        pipe.hgetall(self.keys.scaling_pools)
        _, raw = pipe.execute()
        return decode_beats(raw)

    def read(self) -> dict[str, PoolBeat]:
        return decode_beats(self.client.hgetall(self.keys.scaling_pools))

    def forget(self, node: str) -> None:
        self.client.hdel(self.keys.scaling_pools, node)


def pool_share(
    node: str,
    region: str,
    beats: Mapping[str, PoolBeat],
    now_ts: float,
    fresh_s: float,
    role: str = DATA_ROLE,
) -> tuple[int, int]:
    """(rank, count) of ``node`` among the fresh, consuming pools of ``region``'s ``role``."""
    peers = {node}
    peers.update(
        b.node
        for b in beats.values()
        if b.region == region and b.role == role and b.consuming and b.fresh(now_ts, fresh_s)
    )
    ordered = sorted(peers)
    return ordered.index(node), len(ordered)
