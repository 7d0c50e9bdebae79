"""Given a fleet, the registry classifies devices by id, fast and exactly."""

from __future__ import annotations

import numpy as np
import pytest

from scheduler.errors import ConfigError
from scheduler.model import Topology
from scheduler.registry import (
    build_registry,
    detector_stream,
    generate_registry,
    registry_from_csv,
    registry_to_csv,
)

TOPO = Topology()


def test_a_generated_fleet_has_every_tier_and_region_and_residency() -> None:
    reg = generate_registry(20_000, seed=3)
    assert len(reg) == 20_000
    assert set(np.unique(reg.tier).tolist()) == {0, 1}
    assert set(np.unique(reg.home_region).tolist()) == {0, 1, 2}
    home_bit = np.left_shift(1, reg.home_region.astype(np.int64))
    assert np.all(reg.allowed_mask & home_bit)
    assert 0.05 < np.mean(reg.allowed_mask == home_bit) < 0.2


def test_lookup_finds_known_ids_and_marks_unknown_ones() -> None:
    reg = build_registry(TOPO, [50, 10, 30], [0, 1, 1], [0, 1, 2], [1, 1, 2], [0, 0, 7])
    rows = reg.lookup(np.array([30, 11, 10, 99, 50], dtype=np.uint64))
    assert reg.device_id[rows[rows >= 0]].tolist() == [30, 10, 50]
    assert (rows < 0).tolist() == [False, True, False, True, False]


def test_home_streams_are_those_of_the_known_devices_only() -> None:
    reg = build_registry(TOPO, [50, 10, 30], [0, 1, 1], [0, 1, 2], [1, 1, 2], [0, 0, 7])
    regions, tiers = TOPO.regions, TOPO.tiers
    # device 30: tier 1, home 2; device 99 is unknown
    assert reg.home_streams(np.array([30, 99], dtype=np.uint64)) == (
        detector_stream(regions[2], tiers[1]),
    )
    assert reg.home_streams(np.array([10, 50, 30], dtype=np.uint64)) == (
        detector_stream(regions[0], tiers[0]),
        detector_stream(regions[1], tiers[1]),
        detector_stream(regions[2], tiers[1]),
    )
    assert reg.home_streams(np.array([99], dtype=np.uint64)) == ()
    assert reg.region_streams(regions[0]) == tuple(detector_stream(regions[0], t) for t in tiers)


def test_dense_and_sparse_registries_agree() -> None:
    dense = generate_registry(1000, seed=1)
    sparse = build_registry(
        TOPO,
        dense.device_id * np.uint64(3),
        dense.tier,
        dense.home_region,
        dense.group,
        dense.allowed_mask,
    )
    ids = np.arange(0, 1200, dtype=np.uint64)
    assert np.array_equal(dense.lookup(ids) >= 0, (ids >= 1) & (ids <= 1000))
    assert np.array_equal(sparse.lookup(ids * np.uint64(3)) >= 0, (ids >= 1) & (ids <= 1000))


def test_csv_round_trip_keeps_every_column() -> None:
    reg = generate_registry(300, seed=2)
    back = registry_from_csv(registry_to_csv(reg).splitlines(), TOPO)
    for col in ("device_id", "tier", "home_region", "group", "allowed_mask"):
        assert np.array_equal(getattr(reg, col), getattr(back, col)), col


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("device_id,tier\n1,premium\n", "lacks columns"),
        (
            "device_id,tier,home_region,group,allowed_regions\n1,gold,eu-west,0,\n",
            "line 2",
        ),
        (
            "device_id,tier,home_region,group,allowed_regions\n"
            "1,premium,eu-west,0,\n1,premium,eu-west,0,\n",
            "twice",
        ),
    ],
)
def test_bad_registry_csv_is_refused_with_a_clear_message(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        registry_from_csv(text.splitlines(), TOPO)
