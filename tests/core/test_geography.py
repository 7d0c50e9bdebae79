"""Geography: transfer prices, residency masks, seeded device positions, follow-the-sun load."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.errors import ConfigError
from scheduler.geography import (
    DEFAULT_SITES,
    POPULATION_CLUSTERS,
    RegionSite,
    ResidencyPolicy,
    TransferCostMatrix,
    device_positions,
    diurnal_factor,
    haversine_km,
    mask_regions,
    nearest_region,
    region_mask,
    residency_mask,
)

REGIONS = ("eu-west", "eu-central", "us-east", "ap-south")
SITES = (*DEFAULT_SITES[:1], RegionSite("eu-central", 50.1, 8.7), *DEFAULT_SITES[1:])


def test_distance_derived_prices_grow_with_distance_and_are_zero_at_home() -> None:
    # Given prices derived from distance
    costs = TransferCostMatrix.from_distance(SITES, base_cost_per_gb=0.02)
    m = costs.array()
    # Then home is free, moving is never cheaper than the flat fee, and nearer is cheaper
    assert np.all(np.diag(m) == 0.0)
    assert np.all(m[~np.eye(len(SITES), dtype=bool)] >= 0.02)
    assert costs.between("eu-west", "eu-central") < costs.between("eu-west", "us-east")
    assert costs.between("eu-west", "us-east") < costs.between("eu-west", "ap-south")
    np.testing.assert_allclose(m, m.T)


def test_configured_prices_mirror_pairs_and_fill_defaults() -> None:
    costs = TransferCostMatrix.configured(
        ("a", "b", "c"), {("a", "b"): 0.05}, default_cost_per_gb=0.09
    )
    assert costs.between("b", "a") == 0.05
    assert costs.between("a", "c") == 0.09
    assert costs.between("c", "c") == 0.0


@pytest.mark.parametrize(
    ("regions", "prices", "match"),
    [
        (("a", "b"), ((0.0, 0.1), (0.1, 0.5)), "within b must be 0"),
        (("a", "b"), ((0.0, -1.0), (0.1, 0.0)), "finite"),
        (("a", "b"), ((0.0,),), "2x2"),
    ],
)
def test_malformed_price_matrix_is_config_error(regions, prices, match) -> None:
    with pytest.raises(ConfigError, match=match):
        TransferCostMatrix(regions, prices)


def test_missing_configured_pair_without_default_is_config_error() -> None:
    with pytest.raises(ConfigError, match="a -> b"):
        TransferCostMatrix.configured(("a", "b"), {})


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("eu-only", ("eu-west", "eu-central")),
        ("us-only", ("us-east",)),
        ("global", REGIONS),
    ],
)
def test_named_residency_policies_resolve_to_masks(policy: str, expected: tuple[str, ...]) -> None:
    mask = residency_mask(policy, REGIONS)
    assert mask_regions(mask, REGIONS) == expected
    assert ResidencyPolicy.named(policy, REGIONS).allowed_regions == expected


@pytest.mark.parametrize(
    ("policy", "regions", "match"),
    [("mars-only", REGIONS, "unknown residency policy"), ("eu-only", ("us-east",), "allows none")],
)
def test_residency_policy_that_allows_nothing_is_refused(policy, regions, match) -> None:
    with pytest.raises(ConfigError, match=match):
        residency_mask(policy, regions)


def test_region_mask_bits_follow_topology_order() -> None:
    assert region_mask(("us-east", "eu-west"), REGIONS) == 0b0101
    with pytest.raises(ConfigError, match="not one of"):
        region_mask(("moon",), REGIONS)
    with pytest.raises(ConfigError, match="at most 16"):
        region_mask((), tuple(f"r{i}" for i in range(17)))


def test_device_positions_are_seeded_and_follow_population_clusters() -> None:
    # Given the same seed twice and another seed
    lat, lon = device_positions(50_000, seed=1)
    lat2, lon2 = device_positions(50_000, seed=1)
    lat3, _ = device_positions(50_000, seed=2)
    # Then positions repeat with the seed and differ across seeds
    assert np.array_equal(lat, lat2) and np.array_equal(lon, lon2)
    assert not np.array_equal(lat, lat3)
    assert np.all(np.abs(lat) <= 85) and np.all((lon >= -180) & (lon < 180))
    # And each continent gets about its cluster weight, measured by nearest region
    home = nearest_region(lat, lon, DEFAULT_SITES)
    share = np.bincount(home, minlength=3) / len(home)
    assert all(s > 0.2 for s in share), share


def test_positions_cluster_near_their_centres() -> None:
    lat, lon = device_positions(20_000, seed=5)
    centres = np.array([[c.lat_deg, c.lon_deg] for c in POPULATION_CLUSTERS])
    d = haversine_km(lat[:, None], lon[:, None], centres[None, :, 0], centres[None, :, 1])
    assert np.median(d.min(axis=1)) < 1_000


@settings(max_examples=100, deadline=None)
@given(lon=st.floats(-180, 180), now_ts=st.floats(0, 4e9))
def test_diurnal_factor_stays_in_range(lon: float, now_ts: float) -> None:
    f = float(diurnal_factor(lon, now_ts, trough=0.3))
    assert 0.3 - 1e-9 <= f <= 1.0 + 1e-9


def test_load_follows_the_sun() -> None:
    # Given 14:00 UTC, Then London (lon 0) is at its peak and the antimeridian at its trough
    now_ts = 14 * 3600.0
    assert float(diurnal_factor(0.0, now_ts)) == pytest.approx(1.0)
    assert float(diurnal_factor(180.0, now_ts)) == pytest.approx(0.3)
    # And six hours later the peak has moved 90 degrees west
    assert float(diurnal_factor(-90.0, now_ts + 6 * 3600)) == pytest.approx(1.0)
