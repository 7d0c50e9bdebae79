"""The producer's placer: PlacementPolicy fed with cached region health and load.

Region health and queue depths are read from Redis at most every
``refresh_ms`` (one pipeline), never per reading; cross-region accounting is
kept in memory and added to Redis counters at the same moments.

Readings the policy says must wait (−1: none of their allowed regions is
healthy) are not moved and not dropped: they go to the queue of their home
region (or, when home is not allowed for them, of their cheapest allowed
region), where they stay until that region's workers come back.

Health is judged per tier, by the roles that drain the tier's queues: a region's
data worker drains every queue, its premium lane premium and its screening only.
So a region whose data worker is silent is down for standard readings (they fail
over or wait, as for a partitioned region) while its live lane keeps it up for
premium readings. Anomaly work that premium screening raises there waits for the
data worker.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import redis

from scheduler import defaults
from scheduler.errors import ConfigError
from scheduler.geography import DEFAULT_SITES, RegionSite, TransferCostMatrix
from scheduler.health import RegionHealth
from scheduler.model import Topology, WorkClass
from scheduler.placement import PlacementConfig, PlacementPolicy, RegionLoad, TransferAccount
from scheduler.registry import Registry
from stores.health_store import HealthStore, text
from stores.keys import Keys


@dataclass(frozen=True)
class PlacerConfig:
    #: How stale the cached health and load may get.
    refresh_ms: float = 200.0
    #: A region silent this long counts as partitioned.
    silence_timeout_s: float = 3.0
    #: Queue depth is counted in messages; one message carries up to a batch of readings.
    readings_per_message: float = defaults.BATCH_MAX_READINGS / 2
    #: Processing rate of a region's data workers, for the expected wait (readings/s).
    service_rps: float = 50_000.0


class RegionalPlacer:
    """Callable ``(registry, rows) → region codes`` for ``Producer(placer=...)``."""

    def __init__(
        self,
        policy: PlacementPolicy,
        cost_matrix: TransferCostMatrix,
        store: HealthStore,
        client: redis.Redis,
        keys: Keys,
        config: PlacerConfig = PlacerConfig(),
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy
        self.cost_matrix = cost_matrix
        self.store = store
        self.client = client
        self.keys = keys
        self.config = config
        self.clock = clock
        self.monotonic = monotonic
        regions = policy.topology.regions
        self.regions = regions
        self.health = RegionHealth(config.silence_timeout_s, regions=regions)
        self.lane_health = RegionHealth(config.silence_timeout_s, regions=regions)
        #: Regions whose data role is healthy: they drain every kind of work.
        self.healthy_mask = policy.topology.all_regions_mask()
        #: Per tier code, regions that drain that tier's work (the data role, or for
        #: premium also the premium lane).
        self.tier_masks = np.full(len(policy.topology.tiers), self.healthy_mask, dtype=np.int64)
        self._lane_tiers = np.array(
            [t == WorkClass.PREMIUM.value for t in policy.topology.tiers], dtype=bool
        )
        self.load = RegionLoad.idle(len(regions))
        self._pending = TransferAccount(regions, cost_matrix)
        self._lock = threading.Lock()
        self._refreshed_at = float("-inf")

    def __call__(self, registry: Registry, rows: npt.NDArray[np.int64]) -> npt.NDArray[np.int16]:
        if self.monotonic() - self._refreshed_at >= self.config.refresh_ms / 1000.0:
            self.refresh()
        home = registry.home_region[rows]
        allowed = registry.allowed_mask[rows]
        placed = self._place(home, allowed, registry.tier[rows])
        with self._lock:
            self._pending.record(home, placed, self.policy.config.reading_bytes)
        waiting = placed < 0
        if waiting.any():
            placed[waiting] = self._wait_region(home[waiting], allowed[waiting])
        return placed

    def _place(
        self,
        home: npt.NDArray[np.uint8],
        allowed: npt.NDArray[np.uint16],
        tier: npt.NDArray[np.uint8],
    ) -> npt.NDArray[np.int16]:
        """The policy's placement, each tier against the regions that drain its work."""
        masks = self.tier_masks
        if (masks == masks[0]).all():
            return self.policy.place(home, allowed, tier, int(masks[0]), self.load)
        placed = np.empty(home.size, dtype=np.int16)
        for code in np.unique(tier):
            rows = np.flatnonzero(tier == code)
            placed[rows] = self.policy.place(
                home[rows], allowed[rows], tier[rows], int(masks[code]), self.load
            )
        return placed

    def _wait_region(
        self, home: npt.NDArray[np.uint8], allowed: npt.NDArray[np.uint16]
    ) -> npt.NDArray[np.int16]:
        """Where waiting readings queue: home if allowed, else the cheapest allowed region."""
        n = len(self.regions)
        bits = ((allowed.astype(np.int64)[:, None] >> np.arange(n)) & 1).astype(bool)
        cost = np.where(bits, self.policy.cost_per_gb[home.astype(np.intp)], np.inf)
        home_ok = bits[np.arange(len(home)), home.astype(np.intp)]
        return np.where(home_ok, home, np.argmin(cost, axis=1)).astype(np.int16)

    def refresh(self) -> None:
        """Read heartbeats, queue depths and drain levels; add accounting to Redis."""
        self._refreshed_at = self.monotonic()
        snap = self.store.snapshot()
        now = self.clock()
        for region, ts in snap.heartbeat_ts.items():
            if region in self.regions:
                self.health.heartbeat(region, ts)
        for region, ts in snap.lane_heartbeat_ts.items():
            if region in self.regions:
                self.lane_health.heartbeat(region, ts)
        self.healthy_mask = self.health.healthy_mask(self.regions, now)
        lane_mask = self._lane_mask(now)
        self.tier_masks = np.where(
            self._lane_tiers, self.healthy_mask | lane_mask, self.healthy_mask
        ).astype(np.int64)
        queued = np.array([snap.queued_messages.get(r, 0) for r in self.regions], dtype=np.float64)
        drain = np.array([snap.drain_slots.get(r, 0) for r in self.regions], dtype=np.float64)
        self.load = RegionLoad(
            backlog_readings=queued * self.config.readings_per_message,
            service_rps=np.full(len(self.regions), self.config.service_rps),
            # Slots held for an active or imminent maintenance window are not spare.
            free_slots=np.maximum(self.policy.capacity_slots - drain, 0.0),
        )
        self.flush()

    def _lane_mask(self, now_ts: float) -> int:
        """Regions whose premium lane beat within the timeout. A region never heard from
        gets no grace here: the data role's grace already covers premium at start-up."""
        mask = 0
        for i, region in enumerate(self.regions):
            last = self.lane_health.last_heartbeat_ts(region)
            if last is not None and self.lane_health.is_healthy(region, now_ts):
                mask |= 1 << i
        return mask

    def flush(self) -> None:
        """Add the accounting gathered since the last flush to the Redis counters."""
        with self._lock:
            pending, self._pending = self._pending, TransferAccount(self.regions, self.cost_matrix)
        write_account(self.client, self.keys, pending)

    def close(self) -> None:
        self.flush()


def write_account(client: redis.Redis, keys: Keys, account: TransferAccount) -> None:
    """HINCRBY the transfer hash by one account's readings, bytes and cost per region pair."""
    if account.home_readings == 0 and account.waiting_readings == 0 and not account.total_bytes:
        return
    pipe = client.pipeline(transaction=False)
    pipe.hincrby(keys.transfer, "home_readings", account.home_readings)
    pipe.hincrby(keys.transfer, "waiting_readings", account.waiting_readings)
    cost = account.cost_by_pair
    for i, j in zip(*np.nonzero(account.readings_moved), strict=True):
        pair = f"{account.regions[i]}>{account.regions[j]}"
        pipe.hincrby(keys.transfer, f"readings:{pair}", int(account.readings_moved[i, j]))
        pipe.hincrby(keys.transfer, f"bytes:{pair}", int(account.bytes_moved[i, j]))
        pipe.hincrbyfloat(keys.transfer, f"cost:{pair}", float(cost[i, j]))
    pipe.execute()


def read_account(client: redis.Redis, keys: Keys) -> dict[str, float]:
    """The transfer hash as numbers: home/waiting readings and per-pair readings, bytes, cost."""
    return {text(k): float(v) for k, v in client.hgetall(keys.transfer).items()}


def make_placer(
    store_client: redis.Redis,
    keys: Keys,
    topology: Topology,
    sites: Sequence[RegionSite] = DEFAULT_SITES,
    broker_clients: Mapping[str, redis.Redis] | None = None,
    config: PlacerConfig = PlacerConfig(),
    placement: PlacementConfig | None = None,
    cost_matrix: TransferCostMatrix | None = None,
) -> RegionalPlacer:
    """A placer for ``topology`` on the state Redis; prices derived from site distance by default.

    ``broker_clients`` maps a region with its own broker to a client of that
    broker, where its queue depth is read.
    """
    by_name = {s.name: s for s in sites}
    missing = [r for r in topology.regions if r not in by_name]
    if missing:
        raise ConfigError(f"no site (location, capacity) configured for regions {missing}")
    topo_sites = tuple(by_name[r] for r in topology.regions)
    prices = cost_matrix or TransferCostMatrix.from_distance(topo_sites)
    policy = PlacementPolicy(topology, topo_sites, prices, placement or PlacementConfig())
    store = HealthStore(store_client, keys, topology.regions, broker_clients)
    return RegionalPlacer(policy, prices, store, store_client, keys, config)
