"""Placement: which region processes each reading, honouring residency, health and latency.

Rule, per reading (vectorised over a batch):

1. Home, when it is allowed, healthy and its expected wait is within the
   tier's latency bound.
2. Otherwise the allowed, healthy region other than home with spare capacity
   whose expected wait plus the transfer RTT from home is within the bound,
   cheapest transfer first (ties: lower region index).
3. Otherwise wait where waiting is allowed: home if allowed and healthy (no
   bytes move for nothing); else, when home is down or not allowed, the
   cheapest allowed healthy region, because data has to move anyway and a
   partition may last longer than any queue.
4. Otherwise −1: no allowed region is healthy, the data waits in its queue.

Never a region outside the allowed mask: mask 0 gives −1 (fail closed).
Load is a snapshot; callers place one micro-batch at a time and refresh it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from scheduler.defaults import PREMIUM_LATENCY_BOUND_MS
from scheduler.errors import ConfigError
from scheduler.geography import (
    BYTES_PER_GB,
    MAX_REGIONS,
    RegionSite,
    TransferCostMatrix,
    site_distances_km,
)
from scheduler.model import Topology

F64 = npt.NDArray[np.float64]
I16 = npt.NDArray[np.int16]
WAIT = -1


@dataclass(frozen=True)
class PlacementConfig:
    """Latency bounds per tier and the distance model for inter-region delay."""

    premium_latency_bound_ms: float = PREMIUM_LATENCY_BOUND_MS
    #: Standard work may wait, but bounded (DESIGN invariants).
    standard_latency_bound_ms: float = 30_000.0
    #: Fixed part of an inter-region round trip (handshakes, hops).
    rtt_base_ms: float = 2.0
    #: Light in fibre covers 1,000 km in 5 ms; routes are ~1.5x the great circle.
    rtt_ms_per_1000_km: float = 15.0
    #: A remote region takes moved work only with this share of its slots free (and ≥ 1 slot).
    spare_capacity_threshold: float = 0.25
    #: Wire size of one reading in a columnar batch, for byte and cost accounting.
    reading_bytes: int = 64

    def tier_bounds_ms(self, tiers: Sequence[str]) -> F64:
        bounds = {
            "premium": self.premium_latency_bound_ms,
            "standard": self.standard_latency_bound_ms,
        }
        unknown = [t for t in tiers if t not in bounds]
        if unknown:
            raise ConfigError(f"no latency bound configured for tiers {unknown}")
        return np.array([bounds[t] for t in tiers], dtype=np.float64)


@dataclass(frozen=True)
class RegionLoad:
    """Per-region load snapshot, arrays indexed by region code (length R)."""

    backlog_readings: F64
    service_rps: F64
    free_slots: F64

    @classmethod
    def idle(cls, n_regions: int, service_rps: float = 1e5, free_slots: float = 8) -> RegionLoad:
        return cls(
            np.zeros(n_regions),
            np.full(n_regions, float(service_rps)),
            np.full(n_regions, float(free_slots)),
        )

    def expected_wait_ms(self) -> F64:
        """Backlog over service rate; infinite when a backlog has no one serving it."""
        backlog = np.asarray(self.backlog_readings, dtype=np.float64)
        rate = np.asarray(self.service_rps, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            wait = np.where(rate > 0, backlog / np.where(rate > 0, rate, 1.0) * 1000.0, np.inf)
        return np.where(backlog <= 0, 0.0, wait)


def _bits(mask: npt.ArrayLike, n_regions: int) -> npt.NDArray[np.bool_]:
    """(n, R) booleans from a per-reading or scalar region bitmask."""
    m = np.asarray(mask, dtype=np.int64)
    return ((m[..., None] >> np.arange(n_regions)) & 1).astype(bool)


class PlacementPolicy:
    """Vectorised placement over a fixed topology, sites and transfer prices."""

    def __init__(
        self,
        topology: Topology,
        sites: Sequence[RegionSite],
        cost_matrix: TransferCostMatrix,
        config: PlacementConfig = PlacementConfig(),
    ) -> None:
        regions = topology.regions
        if len(regions) > MAX_REGIONS:
            raise ConfigError(f"at most {MAX_REGIONS} regions fit a residency mask")
        if tuple(s.name for s in sites) != regions:
            raise ConfigError("sites must list the topology's regions in the same order")
        if cost_matrix.regions != regions:
            raise ConfigError("cost matrix must list the topology's regions in the same order")
        self.topology = topology
        self.config = config
        self.cost_per_gb = cost_matrix.array()
        self.rtt_ms = config.rtt_base_ms + config.rtt_ms_per_1000_km * (
            site_distances_km(sites) / 1000.0
        )
        np.fill_diagonal(self.rtt_ms, 0.0)
        self.capacity_slots = np.array([s.capacity_slots for s in sites], dtype=np.float64)
        self.tier_bound_ms = config.tier_bounds_ms(topology.tiers)

    def place(
        self,
        home_region: npt.NDArray[np.uint8],
        allowed_mask: npt.NDArray[np.uint16],
        tier: npt.NDArray[np.uint8],
        healthy_mask: int,
        load: RegionLoad,
    ) -> I16:
        """Processing region index per reading, or −1 (wait: no allowed region is healthy)."""
        n_regions = len(self.topology.regions)
        home = np.asarray(home_region, dtype=np.intp)
        n = home.shape[0]
        if n == 0:
            return np.empty(0, dtype=np.int16)
        usable = _bits(allowed_mask, n_regions) & _bits(healthy_mask, n_regions)[None, :]
        usable = np.broadcast_to(usable, (n, n_regions))
        rows = np.arange(n)
        bound_ms = self.tier_bound_ms[np.asarray(tier, dtype=np.intp)]

        wait_ms = load.expected_wait_ms()
        home_ok = usable[rows, home] & (wait_ms[home] <= bound_ms)

        spare = np.asarray(load.free_slots, dtype=np.float64) >= np.maximum(
            1.0, self.config.spare_capacity_threshold * self.capacity_slots
        )
        latency_ms = wait_ms[None, :] + self.rtt_ms[home]
        fits = usable & spare[None, :] & (latency_ms <= bound_ms[:, None])
        fits[rows, home] = False
        cost = self.cost_per_gb[home]
        remote = self._cheapest(fits, cost)

        fallback_home = usable[rows, home]
        fallback_any = self._cheapest(usable, cost)
        return np.where(
            home_ok,
            home,
            np.where(remote >= 0, remote, np.where(fallback_home, home, fallback_any)),
        ).astype(np.int16)

    @staticmethod
    def _cheapest(candidates: npt.NDArray[np.bool_], cost: F64) -> npt.NDArray[np.intp]:
        """Cheapest candidate per row (first on ties), −1 for rows without one."""
        priced = np.where(candidates, cost, np.inf)
        best = np.argmin(priced, axis=1)
        return np.where(candidates.any(axis=1), best, WAIT)


def round_robin_place(
    home_region: npt.NDArray[np.uint8],
    allowed_mask: npt.NDArray[np.uint16],
    tier: npt.NDArray[np.uint8],
    healthy_mask: int,
    n_regions: int,
    start: int = 0,
) -> I16:
    """Baseline: spread readings over their allowed healthy regions in turn, ignoring locality.

    It still honours residency and health, so a comparison with ``PlacementPolicy``
    measures the price of ignoring geography, not of breaking the rules.
    ``home_region`` and ``tier`` are accepted for a drop-in signature.
    """
    n = np.asarray(home_region).shape[0]
    usable = np.broadcast_to(
        _bits(allowed_mask, n_regions) & _bits(healthy_mask, n_regions)[None, :], (n, n_regions)
    )
    count = usable.sum(axis=1)
    turn = (start + np.arange(n)) % np.maximum(count, 1)
    rank = np.cumsum(usable, axis=1) - 1
    chosen = np.argmax(usable & (rank == turn[:, None]), axis=1)
    return np.where(count > 0, chosen, WAIT).astype(np.int16)


class TransferAccount:
    """Readings and bytes moved between regions, and what moving them cost."""

    def __init__(self, regions: tuple[str, ...], cost_matrix: TransferCostMatrix) -> None:
        if cost_matrix.regions != regions:
            raise ConfigError("cost matrix must list the account's regions in the same order")
        self.regions = regions
        self._cost_per_gb = cost_matrix.array()
        n = len(regions)
        self.bytes_moved = np.zeros((n, n), dtype=np.float64)
        self.readings_moved = np.zeros((n, n), dtype=np.int64)
        self.home_readings = 0
        self.waiting_readings = 0

    def record(
        self, home_region: npt.NDArray[np.uint8], placed: I16, bytes_per_reading: float
    ) -> None:
        """Account one placement result; −1 readings count as waiting, not moved."""
        home = np.asarray(home_region, dtype=np.intp)
        dest = np.asarray(placed, dtype=np.intp)
        waiting = dest < 0
        moved = ~waiting & (dest != home)
        self.waiting_readings += int(waiting.sum())
        self.home_readings += int((~waiting & ~moved).sum())
        np.add.at(self.readings_moved, (home[moved], dest[moved]), 1)
        np.add.at(self.bytes_moved, (home[moved], dest[moved]), bytes_per_reading)

    @property
    def cost_by_pair(self) -> F64:
        return self.bytes_moved / BYTES_PER_GB * self._cost_per_gb

    @property
    def total_bytes(self) -> float:
        return float(self.bytes_moved.sum())

    @property
    def total_cost(self) -> float:
        return float(self.cost_by_pair.sum())

    @property
    def processed_readings(self) -> int:
        return self.home_readings + int(self.readings_moved.sum())

    def home_share(self) -> float:
        """Share of placed (not waiting) readings processed in their home region."""
        placed = self.processed_readings
        return self.home_readings / placed if placed else math.nan

    def by_pair(self) -> dict[tuple[str, str], tuple[float, float]]:
        """(bytes, cost) per (from, to) region pair with any traffic."""
        cost = self.cost_by_pair
        return {
            (self.regions[i], self.regions[j]): (float(self.bytes_moved[i, j]), float(cost[i, j]))
            for i, j in zip(*np.nonzero(self.bytes_moved), strict=True)
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "regions": list(self.regions),
            "bytes_moved": self.bytes_moved.tolist(),
            "readings_moved": self.readings_moved.tolist(),
            "home_readings": self.home_readings,
            "waiting_readings": self.waiting_readings,
        }

    @classmethod
    def from_dict(
        cls, state: Mapping[str, Any], cost_matrix: TransferCostMatrix
    ) -> TransferAccount:
        account = cls(tuple(state["regions"]), cost_matrix)
        account.bytes_moved = np.array(state["bytes_moved"], dtype=np.float64)
        account.readings_moved = np.array(state["readings_moved"], dtype=np.int64)
        account.home_readings = int(state["home_readings"])
        account.waiting_readings = int(state["waiting_readings"])
        return account
