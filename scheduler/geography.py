"""Where regions and devices are: sites, distance, transfer cost, residency, device positions.

Region codes index into ``Topology.regions`` and into any ``sites`` tuple handed
alongside it; residency is a bitmask with bit i = region i, so a per-device
``uint16`` column carries it (at most 16 regions).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from scheduler.errors import ConfigError

EARTH_RADIUS_KM = 6371.0
#: Residency masks are stored per device as uint16.
MAX_REGIONS = 16
#: Cloud providers bill egress per decimal gigabyte.
BYTES_PER_GB = 1e9


@dataclass(frozen=True)
class RegionSite:
    """A processing region: its name, location and slot budget (the cloud resource limit)."""

    name: str
    lat_deg: float
    lon_deg: float
    capacity_slots: int = 8


DEFAULT_SITES: tuple[RegionSite, ...] = (
    RegionSite("eu-west", 53.3, -6.3),
    RegionSite("us-east", 38.9, -77.0),
    RegionSite("ap-south", 19.1, 72.9),
)


def haversine_km(
    lat1: npt.ArrayLike, lon1: npt.ArrayLike, lat2: npt.ArrayLike, lon2: npt.ArrayLike
) -> npt.NDArray[np.float64]:
    """Great-circle distance, vectorised over any broadcastable inputs."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dphi = p2 - p1
    dlmb = np.radians(lon2) - np.radians(lon1)
    a = np.sin(dphi / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dlmb / 2) ** 2
    return np.asarray(2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(a)), dtype=np.float64)


def nearest_region(
    lat_deg: npt.NDArray[np.float64],
    lon_deg: npt.NDArray[np.float64],
    sites: tuple[RegionSite, ...] = DEFAULT_SITES,
) -> npt.NDArray[np.uint8]:
    """Index into ``sites`` of the closest region for each device position."""
    site_lat = np.array([s.lat_deg for s in sites])[None, :]
    site_lon = np.array([s.lon_deg for s in sites])[None, :]
    d = haversine_km(lat_deg[:, None], lon_deg[:, None], site_lat, site_lon)
    return np.asarray(np.argmin(d, axis=1), dtype=np.uint8)


def site_distances_km(sites: Sequence[RegionSite]) -> npt.NDArray[np.float64]:
    """Region-to-region great-circle distances, shape (R, R)."""
    lat = np.array([s.lat_deg for s in sites], dtype=np.float64)
    lon = np.array([s.lon_deg for s in sites], dtype=np.float64)
    return haversine_km(lat[:, None], lon[:, None], lat[None, :], lon[None, :])


@dataclass(frozen=True)
class TransferCostMatrix:
    """Price of moving one GB from region i to region j; zero on the diagonal.

    Stored as nested tuples so the matrix is immutable and hashable; ``array()``
    hands the vectorised policies a numpy view.
    """

    regions: tuple[str, ...]
    cost_per_gb: tuple[tuple[float, ...], ...]

    def __post_init__(self) -> None:
        n = len(self.regions)
        if len(self.cost_per_gb) != n or any(len(row) != n for row in self.cost_per_gb):
            raise ConfigError(f"transfer cost matrix must be {n}x{n} for regions {self.regions}")
        for i, row in enumerate(self.cost_per_gb):
            if row[i] != 0.0:
                raise ConfigError(f"transfer cost within {self.regions[i]} must be 0")
            if any(c < 0 or not math.isfinite(c) for c in row):
                raise ConfigError(f"transfer costs from {self.regions[i]} must be finite and ≥ 0")

    @classmethod
    def from_distance(
        cls,
        sites: Sequence[RegionSite],
        base_cost_per_gb: float = 0.02,
        cost_per_gb_per_1000_km: float = 0.01,
    ) -> TransferCostMatrix:
        """Derived prices: a flat inter-region egress fee plus a distance-dependent part."""
        d_km = site_distances_km(sites)
        cost = base_cost_per_gb + cost_per_gb_per_1000_km * d_km / 1000.0
        np.fill_diagonal(cost, 0.0)
        rows = tuple(tuple(float(c) for c in row) for row in cost)
        return cls(tuple(s.name for s in sites), rows)

    @classmethod
    def configured(
        cls,
        regions: Sequence[str],
        cost_per_gb_by_pair: Mapping[tuple[str, str], float],
        default_cost_per_gb: float | None = None,
    ) -> TransferCostMatrix:
        """Prices from configuration; a pair missing both ways uses the default, else an error.

        A pair given one way only is taken to cost the same in reverse, which is
        how most providers price inter-region links.
        """
        names = tuple(regions)
        rows: list[tuple[float, ...]] = []
        for a in names:
            row: list[float] = []
            for b in names:
                price = cost_per_gb_by_pair.get((a, b), cost_per_gb_by_pair.get((b, a)))
                if a == b:
                    price = 0.0
                elif price is None:
                    if default_cost_per_gb is None:
                        raise ConfigError(f"no transfer cost configured for {a} -> {b}")
                    price = default_cost_per_gb
                row.append(float(price))
            rows.append(tuple(row))
        return cls(names, tuple(rows))

    def array(self) -> npt.NDArray[np.float64]:
        return np.array(self.cost_per_gb, dtype=np.float64).reshape(
            len(self.regions), len(self.regions)
        )

    def between(self, from_region: str, to_region: str) -> float:
        """Cost per GB from one named region to another."""
        return self.cost_per_gb[self.regions.index(from_region)][self.regions.index(to_region)]


# Named residency policies select regions by name prefix, so that a topology
# that grows an "eu-central" is EU-only-compatible without a config change.
NAMED_POLICY_PREFIXES: dict[str, tuple[str, ...]] = {
    "global": ("",),
    "eu-only": ("eu-",),
    "us-only": ("us-",),
    "ap-only": ("ap-",),
    "americas": ("us-", "ca-", "sa-"),
}


@dataclass(frozen=True)
class ResidencyPolicy:
    """The regions a device's data may be processed in, by name."""

    name: str
    allowed_regions: tuple[str, ...]

    @classmethod
    def named(cls, name: str, regions: Sequence[str]) -> ResidencyPolicy:
        """A named policy (``eu-only``, ``global``…) resolved against the topology's regions.

        Raises ConfigError when the name is unknown or selects no region: a
        policy that allows nothing would park that data forever.
        """
        prefixes = NAMED_POLICY_PREFIXES.get(name)
        if prefixes is None:
            raise ConfigError(
                f"unknown residency policy {name!r}; known: {sorted(NAMED_POLICY_PREFIXES)}"
            )
        allowed = tuple(r for r in regions if r.startswith(prefixes))
        if not allowed:
            raise ConfigError(f"residency policy {name!r} allows none of {tuple(regions)}")
        return cls(name, allowed)

    def mask(self, regions: Sequence[str]) -> int:
        return region_mask(self.allowed_regions, regions)


def region_mask(allowed: Sequence[str], regions: Sequence[str]) -> int:
    """Bitmask with bit i set when ``regions[i]`` is allowed; unknown names are a ConfigError."""
    if len(regions) > MAX_REGIONS:
        raise ConfigError(f"at most {MAX_REGIONS} regions fit a residency mask")
    mask = 0
    for name in allowed:
        if name not in regions:
            raise ConfigError(f"region {name!r} is not one of {tuple(regions)}")
        mask |= 1 << regions.index(name)
    return mask


def residency_mask(policy: str, regions: Sequence[str]) -> int:
    """Bitmask of a named policy, e.g. ``residency_mask("eu-only", topology.regions)``."""
    return ResidencyPolicy.named(policy, regions).mask(regions)


def mask_regions(mask: int, regions: Sequence[str]) -> tuple[str, ...]:
    """Region names whose bits are set in ``mask``."""
    return tuple(r for i, r in enumerate(regions) if mask >> i & 1)


@dataclass(frozen=True)
class PopulationCluster:
    """A population-ish centre of devices: where, how spread out, and its share of the fleet."""

    name: str
    lat_deg: float
    lon_deg: float
    spread_deg: float
    weight: float


# Rough shares of connected devices by metro area, enough to make load follow the sun.
POPULATION_CLUSTERS: tuple[PopulationCluster, ...] = (
    PopulationCluster("europe-west", 50.0, 5.0, 6.0, 0.16),
    PopulationCluster("europe-east", 50.0, 25.0, 6.0, 0.06),
    PopulationCluster("us-east", 40.0, -78.0, 5.0, 0.12),
    PopulationCluster("us-west", 37.0, -120.0, 4.0, 0.07),
    PopulationCluster("latam", -20.0, -50.0, 8.0, 0.07),
    PopulationCluster("africa", 5.0, 15.0, 10.0, 0.05),
    PopulationCluster("india", 22.0, 78.0, 6.0, 0.16),
    PopulationCluster("east-asia", 32.0, 115.0, 7.0, 0.18),
    PopulationCluster("japan-korea", 36.0, 135.0, 3.0, 0.06),
    PopulationCluster("oceania", -33.0, 150.0, 4.0, 0.02),
    PopulationCluster("southeast-asia", 5.0, 105.0, 6.0, 0.05),
)


def device_positions(
    n: int, seed: int, clusters: Sequence[PopulationCluster] = POPULATION_CLUSTERS
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Seeded (lat_deg, lon_deg) of ``n`` devices drawn around weighted population clusters."""
    rng = np.random.default_rng(seed)
    weights = np.array([c.weight for c in clusters], dtype=np.float64)
    which = rng.choice(len(clusters), size=n, p=weights / weights.sum())
    centre_lat = np.array([c.lat_deg for c in clusters])[which]
    centre_lon = np.array([c.lon_deg for c in clusters])[which]
    spread = np.array([c.spread_deg for c in clusters])[which]
    lat = np.clip(centre_lat + rng.normal(0.0, 1.0, n) * spread, -85.0, 85.0)
    lon = (centre_lon + rng.normal(0.0, 1.0, n) * spread + 180.0) % 360.0 - 180.0
    return lat.astype(np.float64), lon.astype(np.float64)


def diurnal_factor(
    lon_deg: npt.ArrayLike, now_ts: float, trough: float = 0.3, peak_hour: float = 14.0
) -> npt.NDArray[np.float64]:
    """Relative activity in [trough, 1] by local solar time: load that follows the sun.

    Local solar hour is UTC hour + lon/15; a cosine peaks at ``peak_hour``
    (mid-afternoon, when people and machines are busiest) and bottoms out
    twelve hours later.
    """
    utc_hour = (now_ts % 86_400.0) / 3600.0
    local_hour = (utc_hour + np.asarray(lon_deg, dtype=np.float64) / 15.0) % 24.0
    phase = 2.0 * np.pi * (local_hour - peak_hour) / 24.0
    return np.asarray(trough + (1.0 - trough) * 0.5 * (1.0 + np.cos(phase)), dtype=np.float64)
