"""A synthetic device fleet as numpy columns: tier, group, position, home region, residency.

Positions come from scheduler.geography's population clusters, so regions see
the sun at different times and some devices are far from any region. Home
region is the nearest site; a share of the devices homed in an EU region is
EU-only (residency), which is what the partition scenarios lean on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from scheduler.geography import (
    DEFAULT_SITES,
    RegionSite,
    device_positions,
    nearest_region,
    residency_mask,
)

#: Mean interval between a device's readings; 1 s gives the fleet ~1M readings/s.
DEFAULT_READING_INTERVAL_S = 1.0


@dataclass(frozen=True)
class Fleet:
    """One row per device; ``allowed_mask`` bit i means region i may process its data."""

    regions: tuple[str, ...]
    tiers: tuple[str, ...]
    tier: npt.NDArray[np.uint8]
    group: npt.NDArray[np.uint32]
    lat_deg: npt.NDArray[np.float32]
    lon_deg: npt.NDArray[np.float32]
    home_region: npt.NDArray[np.uint8]
    allowed_mask: npt.NDArray[np.uint16]
    reading_interval_s: npt.NDArray[np.float32]

    def __len__(self) -> int:
        return int(self.tier.shape[0])

    def rate_rps_by_region_tier(self) -> npt.NDArray[np.float64]:
        """Offered readings/s per [home region, tier] when every device reports on schedule."""
        out = np.zeros((len(self.regions), len(self.tiers)))
        np.add.at(
            out, (self.home_region, self.tier), 1.0 / self.reading_interval_s.astype(np.float64)
        )
        return out

    def shares(self) -> npt.NDArray[np.float64]:
        """Share of readings per [home region, tier], summing to 1."""
        r = self.rate_rps_by_region_tier()
        return np.asarray(r / r.sum(), dtype=np.float64)

    def cohorts(self) -> Cohorts:
        """Devices folded into (home region, allowed mask, tier) cohorts, with their rate."""
        key = (
            self.home_region.astype(np.int64) << 24
            | self.allowed_mask.astype(np.int64) << 8
            | self.tier.astype(np.int64)
        )
        uniq, inverse = np.unique(key, return_inverse=True)
        rate = np.bincount(inverse, weights=1.0 / self.reading_interval_s.astype(np.float64))
        home = (uniq >> 24).astype(np.uint8)
        tier = (uniq & 0xFF).astype(np.uint8)
        cell_rate = np.zeros((len(self.regions), len(self.tiers)))
        np.add.at(cell_rate, (home, tier), rate)
        return Cohorts(
            home_region=home,
            allowed_mask=((uniq >> 8) & 0xFFFF).astype(np.uint16),
            tier=tier,
            share_of_cell=rate / cell_rate[home, tier],
        )


@dataclass(frozen=True)
class Cohorts:
    """Devices with the same placement inputs; ``share_of_cell`` splits a (region, tier) rate."""

    home_region: npt.NDArray[np.uint8]
    allowed_mask: npt.NDArray[np.uint16]
    tier: npt.NDArray[np.uint8]
    share_of_cell: npt.NDArray[np.float64]

    def __len__(self) -> int:
        return int(self.tier.shape[0])


def generate_fleet(
    devices: int = 1_000_000,
    seed: int = 0,
    sites: tuple[RegionSite, ...] = DEFAULT_SITES,
    tiers: tuple[str, ...] = ("premium", "standard"),
    premium_share: float = 0.2,
    group_size: int = 1_000,
    eu_only_share: float = 0.3,
    reading_interval_s: float = DEFAULT_READING_INTERVAL_S,
) -> Fleet:
    """Generate a fleet; seeded, so the same arguments give the same columns.

    Groups are spatially coherent (devices of a group share a cluster and are
    sorted by longitude) because incidents in the field hit neighbours together.
    """
    rng = np.random.default_rng([seed, 0xF1EE7])
    lat, lon = device_positions(devices, seed)
    home = nearest_region(lat, lon, sites)
    order = np.lexsort((lon, home))
    group = np.empty(devices, dtype=np.uint32)
    group[order] = (np.arange(devices) // max(group_size, 1)).astype(np.uint32)
    tier = np.where(rng.random(devices) < premium_share, 0, len(tiers) - 1).astype(np.uint8)
    regions = tuple(s.name for s in sites)
    all_mask = (1 << len(sites)) - 1
    eu_mask = residency_mask("eu-only", regions) if any(r.startswith("eu-") for r in regions) else 0
    home_in_eu = (eu_mask >> home.astype(np.int64)) & 1 == 1
    eu_only = home_in_eu & (rng.random(devices) < eu_only_share)
    allowed = np.where(eu_only, eu_mask, all_mask)
    interval = reading_interval_s * rng.lognormal(0.0, 0.25, devices)
    # Normalise so the fleet's mean rate is exactly one reading per interval per device.
    interval *= reading_interval_s * np.mean(1.0 / interval)
    return Fleet(
        regions=regions,
        tiers=tiers,
        tier=tier,
        group=group,
        lat_deg=lat.astype(np.float32),
        lon_deg=lon.astype(np.float32),
        home_region=home,
        allowed_mask=allowed.astype(np.uint16),
        reading_interval_s=interval.astype(np.float32),
    )
