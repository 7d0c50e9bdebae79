"""Placement: home first, cheapest allowed healthy region next, never outside residency."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.errors import ConfigError
from scheduler.geography import RegionSite, TransferCostMatrix, residency_mask
from scheduler.model import Topology
from scheduler.placement import (
    PlacementConfig,
    PlacementPolicy,
    RegionLoad,
    TransferAccount,
    round_robin_place,
)

SITES = (
    RegionSite("eu-west", 53.3, -6.3),
    RegionSite("eu-central", 50.1, 8.7),
    RegionSite("us-east", 38.9, -77.0),
    RegionSite("ap-south", 19.1, 72.9),
)
TOPO = Topology(tiers=("premium", "standard"), regions=tuple(s.name for s in SITES))
COSTS = TransferCostMatrix.from_distance(SITES)
POLICY = PlacementPolicy(TOPO, SITES, COSTS, PlacementConfig())
R = {name: i for i, name in enumerate(TOPO.regions)}
ALL = TOPO.all_regions_mask()
EU = residency_mask("eu-only", TOPO.regions)
PREMIUM, STANDARD = 0, 1
SERVICE_RPS = 10_000.0


def load(backlog_s: dict[str, float] | None = None, free: dict[str, float] | None = None):
    """Load where each region's backlog takes ``backlog_s`` seconds to serve."""
    backlog = np.zeros(len(SITES))
    slots = np.full(len(SITES), 8.0)
    for name, seconds in (backlog_s or {}).items():
        backlog[R[name]] = seconds * SERVICE_RPS
    for name, n in (free or {}).items():
        slots[R[name]] = n
    return RegionLoad(backlog, np.full(len(SITES), SERVICE_RPS), slots)


def healthy(*down: str) -> int:
    return ALL & ~sum(1 << R[d] for d in down)


def place_one(home: str, allowed: int, tier: int, healthy_mask: int, region_load) -> int:
    out = POLICY.place(
        np.array([R[home]], dtype=np.uint8),
        np.array([allowed], dtype=np.uint16),
        np.array([tier], dtype=np.uint8),
        healthy_mask,
        region_load,
    )
    return int(out[0])


CASES = [
    # (why, home, allowed, tier, healthy, load, expected region or -1)
    ("home healthy and idle → home", "eu-west", ALL, PREMIUM, healthy(), load(), "eu-west"),
    (
        "home overloaded → cheapest allowed (nearest) region",
        "eu-west",
        ALL,
        PREMIUM,
        healthy(),
        load({"eu-west": 2.0}),
        "eu-central",
    ),
    (
        "home overloaded, nearest not allowed → next cheapest allowed",
        "eu-west",
        ALL & ~(1 << R["eu-central"]),
        PREMIUM,
        healthy(),
        load({"eu-west": 2.0}),
        "us-east",
    ),
    (
        "home down → cheapest allowed healthy",
        "eu-central",
        ALL,
        STANDARD,
        healthy("eu-central"),
        load(),
        "eu-west",
    ),
    (
        "EU-only with all of EU down → wait, never another region",
        "eu-west",
        EU,
        PREMIUM,
        healthy("eu-west", "eu-central"),
        load(),
        -1,
    ),
    (
        "EU-only with home down → the other EU region",
        "eu-west",
        EU,
        PREMIUM,
        healthy("eu-west"),
        load(),
        "eu-central",
    ),
    ("mask 0 fails closed", "eu-west", 0, PREMIUM, healthy(), load(), -1),
    (
        "every alternative overloaded → wait at home",
        "eu-west",
        ALL,
        PREMIUM,
        healthy(),
        load({"eu-west": 2.0, "eu-central": 2.0, "us-east": 2.0, "ap-south": 2.0}),
        "eu-west",
    ),
    (
        "standard tolerates a backlog premium does not",
        "eu-west",
        ALL,
        STANDARD,
        healthy(),
        load({"eu-west": 2.0}),
        "eu-west",
    ),
    (
        "alternative without spare slots is skipped",
        "eu-west",
        EU,
        PREMIUM,
        healthy(),
        load({"eu-west": 2.0}, free={"eu-central": 1}),
        "eu-west",
    ),
    (
        "alternative whose wait plus RTT breaks the bound is skipped",
        "eu-west",
        ALL & ~(1 << R["eu-central"]),
        PREMIUM,
        healthy(),
        # us-east is ~5,500 km away: ~85 ms RTT on top of a 450 ms wait > 500 ms.
        load({"eu-west": 2.0, "us-east": 0.45}),
        "ap-south",
    ),
    (
        "home outside residency → cheapest allowed even when idle",
        "ap-south",
        EU,
        PREMIUM,
        healthy(),
        load(),
        "eu-central",
    ),
    (
        "home outside residency, allowed region overloaded → still allowed region",
        "ap-south",
        1 << R["eu-west"],
        PREMIUM,
        healthy(),
        load({"eu-west": 9.0}),
        "eu-west",
    ),
    (
        "home down, only healthy allowed region overloaded → move there, don't wait",
        "eu-west",
        EU,
        PREMIUM,
        healthy("eu-west"),
        load({"eu-central": 9.0}),
        "eu-central",
    ),
]


@pytest.mark.parametrize(
    ("home", "allowed", "tier", "healthy_mask", "region_load", "expected"),
    [pytest.param(*c[1:], id=c[0]) for c in CASES],
)
def test_placement_table(home, allowed, tier, healthy_mask, region_load, expected) -> None:
    # Given one reading from `home` under `region_load`, When placed, Then:
    want = -1 if expected == -1 else R[expected]
    assert place_one(home, allowed, tier, healthy_mask, region_load) == want


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, 40),
    seed=st.integers(0, 2**32 - 1),
    healthy_mask=st.integers(0, ALL),
)
def test_result_is_always_allowed_and_healthy_or_waits(n: int, seed: int, healthy_mask: int):
    # Given random homes, residency masks, tiers and loads
    rng = np.random.default_rng(seed)
    home = rng.integers(0, len(SITES), n).astype(np.uint8)
    allowed = rng.integers(0, ALL + 1, n).astype(np.uint16)
    tier = rng.integers(0, 2, n).astype(np.uint8)
    region_load = RegionLoad(
        rng.exponential(5_000.0, len(SITES)),
        rng.choice([0.0, 1_000.0, 10_000.0], len(SITES)),
        rng.integers(0, 9, len(SITES)).astype(np.float64),
    )
    # When placed
    out = POLICY.place(home, allowed, tier, healthy_mask, region_load)
    # Then each reading goes to an allowed healthy region, or waits exactly when there is none
    usable = allowed.astype(np.int64) & healthy_mask
    placed = out >= 0
    assert np.all(placed == (usable != 0))
    assert np.all((usable[placed] >> out[placed]) & 1)


def test_vectorised_batch_matches_one_by_one() -> None:
    # Given a mixed batch
    rng = np.random.default_rng(7)
    n = 200
    home = rng.integers(0, len(SITES), n).astype(np.uint8)
    allowed = rng.choice([ALL, EU, 0, 1 << R["us-east"]], n).astype(np.uint16)
    tier = rng.integers(0, 2, n).astype(np.uint8)
    region_load = load({"eu-west": 2.0, "us-east": 0.2})
    mask = healthy("ap-south")
    # When placed as a batch and one at a time, Then both agree
    batch = POLICY.place(home, allowed, tier, mask, region_load)
    single = [
        place_one(TOPO.regions[h], int(a), int(t), mask, region_load)
        for h, a, t in zip(home, allowed, tier, strict=True)
    ]
    assert batch.dtype == np.int16
    assert batch.tolist() == single


def test_empty_batch() -> None:
    out = POLICY.place(
        np.empty(0, np.uint8), np.empty(0, np.uint16), np.empty(0, np.uint8), ALL, load()
    )
    assert out.shape == (0,) and out.dtype == np.int16


def test_unknown_tier_or_misordered_sites_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="gold"):
        PlacementPolicy(Topology(tiers=("gold",), regions=TOPO.regions), SITES, COSTS)
    with pytest.raises(ConfigError, match="same order"):
        PlacementPolicy(TOPO, SITES[::-1], COSTS)


def test_round_robin_spreads_over_allowed_healthy_regions_only() -> None:
    # Given 300 EU-only readings and 300 unrestricted ones, ap-south down
    n = 600
    home = np.zeros(n, np.uint8)
    allowed = np.array([EU] * 300 + [ALL] * 300, np.uint16)
    mask = healthy("ap-south")
    # When placed round-robin
    out = round_robin_place(home, allowed, np.zeros(n, np.uint8), mask, len(SITES))
    # Then EU-only readings alternate between the two EU regions, the rest spread over three
    assert np.bincount(out[:300], minlength=4).tolist() == [150, 150, 0, 0]
    assert np.bincount(out[300:], minlength=4).tolist() == [100, 100, 100, 0]
    none = round_robin_place(home[:3], np.zeros(3, np.uint16), home[:3], mask, len(SITES))
    assert none.tolist() == [-1, -1, -1]


def test_transfer_account_counts_bytes_cost_and_home_share() -> None:
    # Given 8 readings at home, 2 moved eu-west → us-east, 1 waiting
    account = TransferAccount(TOPO.regions, COSTS)
    home = np.array([R["eu-west"]] * 11, np.uint8)
    placed = np.array([R["eu-west"]] * 8 + [R["us-east"]] * 2 + [-1], np.int16)
    # When recorded with 500 MB per reading
    account.record(home, placed, bytes_per_reading=5e8)
    # Then one GB moved on one pair at that pair's price
    assert account.total_bytes == pytest.approx(1e9)
    assert account.total_cost == pytest.approx(COSTS.between("eu-west", "us-east"))
    assert account.by_pair() == {
        ("eu-west", "us-east"): (pytest.approx(1e9), pytest.approx(account.total_cost))
    }
    assert account.home_share() == pytest.approx(0.8)
    assert account.waiting_readings == 1
    # And the state survives a round trip through plain data
    again = TransferAccount.from_dict(account.to_dict(), COSTS)
    assert again.total_cost == pytest.approx(account.total_cost)
    assert again.home_share() == pytest.approx(0.8)


def test_policy_moves_less_than_round_robin_under_normal_load() -> None:
    # Given a fleet spread over its home regions, everything healthy and idle
    rng = np.random.default_rng(3)
    n = 10_000
    home = rng.integers(0, len(SITES), n).astype(np.uint8)
    allowed = np.full(n, ALL, np.uint16)
    tier = rng.integers(0, 2, n).astype(np.uint8)
    ours, baseline = TransferAccount(TOPO.regions, COSTS), TransferAccount(TOPO.regions, COSTS)
    # When placed by the policy and by round-robin
    ours.record(home, POLICY.place(home, allowed, tier, ALL, load()), 64)
    baseline.record(home, round_robin_place(home, allowed, tier, ALL, len(SITES)), 64)
    # Then the policy keeps everything home and moves nothing
    assert ours.home_share() == 1.0 and ours.total_cost == 0.0
    assert baseline.home_share() < 0.3 and baseline.total_cost > 0.0
