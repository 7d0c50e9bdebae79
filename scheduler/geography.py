"""Where regions and devices are: region sites, great-circle distance, nearest region."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

EARTH_RADIUS_KM = 6371.0


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
