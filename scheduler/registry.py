"""The device registry as a numpy snapshot: id → tier, home region, group, residency.

Producers and workers look up whole columns of device ids at once; the
snapshot keeps ids sorted so a lookup is one ``searchsorted`` (100,000 ids in
a few milliseconds against 1,000,000 devices).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from scheduler.errors import ConfigError
from scheduler.geography import DEFAULT_SITES, RegionSite, nearest_region
from scheduler.model import Topology

CSV_FIELDS = ("device_id", "tier", "home_region", "group", "allowed_regions", "lat", "lon")


@dataclass(frozen=True)
class Registry:
    """An immutable snapshot of the device registry; ``version`` changes on every save."""

    topology: Topology
    device_id: npt.NDArray[np.uint64]  # sorted ascending, unique
    tier: npt.NDArray[np.uint8]
    home_region: npt.NDArray[np.uint8]
    group: npt.NDArray[np.uint32]
    allowed_mask: npt.NDArray[np.uint16]  # bit i = topology.regions[i]
    lat_deg: npt.NDArray[np.float32]
    lon_deg: npt.NDArray[np.float32]
    version: int = 0

    def __len__(self) -> int:
        return int(self.device_id.shape[0])

    @property
    def is_dense(self) -> bool:
        """True when ids are exactly 1..n, so a lookup is a subtraction."""
        n = len(self)
        return n > 0 and int(self.device_id[0]) == 1 and int(self.device_id[-1]) == n

    def lookup(self, device_id: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """Row index of each id, or -1 where the device is unknown."""
        ids = np.asarray(device_id, dtype=np.uint64)
        n = len(self)
        if n == 0:
            return np.full(ids.shape, -1, dtype=np.int64)
        if self.is_dense:
            row = ids.astype(np.int64) - 1
            return np.where((ids >= 1) & (ids <= n), row, -1)
        pos = np.searchsorted(self.device_id, ids)
        pos_c = np.minimum(pos, n - 1)
        found = self.device_id[pos_c] == ids
        return np.where(found, pos_c, -1).astype(np.int64)

    def home_streams(self, device_id: npt.ArrayLike) -> tuple[str, ...]:
        """The detector write streams (home region and tier, ``detector_stream``) of the
        known devices among ``device_id``."""
        rows = self.lookup(device_id)
        known = rows[rows >= 0]
        tiers = len(self.topology.tiers)
        codes = self.home_region[known].astype(np.intp) * tiers + self.tier[known]
        present = np.bincount(codes, minlength=len(self.topology.regions) * tiers)
        return tuple(
            detector_stream(self.topology.regions[c // tiers], self.topology.tiers[c % tiers])
            for c in np.flatnonzero(present).tolist()
        )

    def region_streams(self, region: str) -> tuple[str, ...]:
        """Every detector write stream of ``region``'s devices, one per tier."""
        return tuple(detector_stream(region, tier) for tier in self.topology.tiers)

    def with_version(self, version: int) -> Registry:
        return Registry(
            self.topology,
            self.device_id,
            self.tier,
            self.home_region,
            self.group,
            self.allowed_mask,
            self.lat_deg,
            self.lon_deg,
            version,
        )


def detector_stream(region: str, tier: str) -> str:
    """The devices whose detector state writes one count follows: one home region's
    devices of one tier (``stores.detector_store``). Premium's screenings then never make
    a large standard screening read its states again, nor one region's another's."""
    return f"{region}:{tier}"


def build_registry(
    topology: Topology,
    device_id: npt.ArrayLike,
    tier: npt.ArrayLike,
    home_region: npt.ArrayLike,
    group: npt.ArrayLike,
    allowed_mask: npt.ArrayLike,
    lat_deg: npt.ArrayLike | None = None,
    lon_deg: npt.ArrayLike | None = None,
    version: int = 0,
) -> Registry:
    """Validate and sort columns into a snapshot; raises ConfigError on bad input."""
    ids = np.asarray(device_id, dtype=np.uint64)
    n = ids.shape[0]
    cols: dict[str, npt.NDArray[Any]] = {
        "tier": np.asarray(tier, dtype=np.uint8),
        "home_region": np.asarray(home_region, dtype=np.uint8),
        "group": np.asarray(group, dtype=np.uint32),
        "allowed_mask": np.asarray(allowed_mask, dtype=np.uint16),
        "lat_deg": np.asarray(np.zeros(n) if lat_deg is None else lat_deg, dtype=np.float32),
        "lon_deg": np.asarray(np.zeros(n) if lon_deg is None else lon_deg, dtype=np.float32),
    }
    for name, col in cols.items():
        if col.shape != (n,):
            raise ConfigError(f"registry column {name} has {col.shape[0]} rows, expected {n}")
    if n and int(cols["tier"].max()) >= len(topology.tiers):
        raise ConfigError("registry has a tier code outside the configured tiers")
    if n and int(cols["home_region"].max()) >= len(topology.regions):
        raise ConfigError("registry has a home region outside the configured regions")
    home_bit = np.left_shift(np.uint16(1), cols["home_region"].astype(np.uint16))
    if n and np.any(cols["allowed_mask"] & ~np.uint16(topology.all_regions_mask())):
        raise ConfigError("registry allows a region outside the configured regions")
    cols["allowed_mask"] = cols["allowed_mask"] | home_bit * (cols["allowed_mask"] == 0)
    order = np.argsort(ids, kind="stable")
    ids = ids[order]
    if n > 1 and np.any(ids[1:] == ids[:-1]):
        dup = ids[1:][ids[1:] == ids[:-1]][0]
        raise ConfigError(f"registry lists device {int(dup)} twice")
    sorted_cols = {k: v[order] for k, v in cols.items()}
    return Registry(topology=topology, device_id=ids, version=version, **sorted_cols)


def generate_registry(
    devices: int,
    seed: int = 0,
    topology: Topology | None = None,
    sites: tuple[RegionSite, ...] = DEFAULT_SITES,
    premium_share: float = 0.2,
    group_size: int = 1_000,
    resident_share: float = 0.1,
) -> Registry:
    """A synthetic fleet: positions near region sites, home = nearest, some region-locked.

    ``resident_share`` of devices may only be processed in their home region
    (the EU-only style of residency); the rest may go anywhere.
    """
    if devices < 0:
        raise ConfigError("devices must be >= 0")
    topo = topology or Topology(regions=tuple(s.name for s in sites))
    rng = np.random.default_rng(seed)
    site_idx = rng.integers(0, len(sites), size=devices)
    lat = np.array([s.lat_deg for s in sites])[site_idx] + rng.normal(0, 8, devices)
    lon = np.array([s.lon_deg for s in sites])[site_idx] + rng.normal(0, 12, devices)
    lat = np.clip(lat, -89.0, 89.0)
    lon = (lon + 180.0) % 360.0 - 180.0
    home = nearest_region(lat, lon, sites)
    n_tiers = len(topo.tiers)
    tier = np.where(
        rng.random(devices) < premium_share, 0, rng.integers(1, max(n_tiers, 2), devices)
    )
    tier = np.minimum(tier, n_tiers - 1)
    resident = rng.random(devices) < resident_share
    allowed = np.where(
        resident,
        np.left_shift(1, home.astype(np.int64)),
        topo.all_regions_mask(),
    )
    ids = np.arange(1, devices + 1, dtype=np.uint64)
    group = (np.arange(devices) // max(group_size, 1)).astype(np.uint32)
    return build_registry(topo, ids, tier, home, group, allowed, lat, lon, version=1)


def registry_to_csv(reg: Registry) -> str:
    """CSV with region and tier names (human-editable); allowed regions joined by '|'."""
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(CSV_FIELDS)
    regions = reg.topology.regions
    for i in range(len(reg)):
        mask = int(reg.allowed_mask[i])
        allowed = "|".join(r for b, r in enumerate(regions) if mask >> b & 1)
        w.writerow(
            (
                int(reg.device_id[i]),
                reg.topology.tiers[reg.tier[i]],
                regions[reg.home_region[i]],
                int(reg.group[i]),
                allowed,
                f"{reg.lat_deg[i]:.4f}",
                f"{reg.lon_deg[i]:.4f}",
            )
        )
    return out.getvalue()


def registry_from_csv(rows: Iterable[str], topology: Topology) -> Registry:
    """Parse registry CSV; names an offending line on any error."""
    reader = csv.DictReader(rows)
    missing = set(CSV_FIELDS[:5]) - set(reader.fieldnames or ())
    if missing:
        raise ConfigError(f"registry CSV lacks columns: {', '.join(sorted(missing))}")
    ids: list[int] = []
    tiers: list[int] = []
    homes: list[int] = []
    groups: list[int] = []
    masks: list[int] = []
    lats: list[float] = []
    lons: list[float] = []
    for line_no, row in enumerate(reader, start=2):
        try:
            ids.append(int(row["device_id"]))
            tiers.append(topology.tier_code(row["tier"]))
            homes.append(topology.region_code(row["home_region"]))
            groups.append(int(row["group"]))
            allowed = [r for r in (row["allowed_regions"] or "").split("|") if r]
            masks.append(sum(1 << topology.region_code(r) for r in allowed))
            lats.append(float(row.get("lat") or 0.0))
            lons.append(float(row.get("lon") or 0.0))
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"registry CSV line {line_no}: {exc}") from exc
    return build_registry(topology, ids, tiers, homes, groups, masks, lats, lons)
