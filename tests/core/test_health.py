"""Region health: silence past the timeout is a partition; heartbeats heal it."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.errors import ConfigError
from scheduler.health import RegionHealth

REGIONS = ("eu-west", "us-east", "ap-south")
T0 = 1_700_000_000.0


@pytest.mark.parametrize(
    ("silent_for_s", "healthy"),
    [(0.0, True), (4.9, True), (5.0, True), (5.01, False), (60.0, False)],
)
def test_silence_beyond_timeout_is_a_partition(silent_for_s: float, healthy: bool) -> None:
    # Given a region that heartbeat at T0
    health = RegionHealth(silence_timeout_s=5.0)
    health.heartbeat("eu-west", T0)
    # When asked after `silent_for_s` of silence
    # Then it is healthy exactly while the silence is within the timeout
    assert health.is_healthy("eu-west", T0 + silent_for_s) is healthy
    assert health.partitioned(T0 + silent_for_s) == ([] if healthy else ["eu-west"])


def test_heartbeat_heals_a_partition() -> None:
    # Given a partitioned region
    health = RegionHealth(silence_timeout_s=5.0)
    health.heartbeat("us-east", T0)
    assert not health.is_healthy("us-east", T0 + 10)
    # When it heartbeats again, Then it is healthy
    health.heartbeat("us-east", T0 + 10)
    assert health.is_healthy("us-east", T0 + 10)
    assert health.partitioned(T0 + 10) == []


def test_late_heartbeat_never_moves_last_seen_backwards() -> None:
    health = RegionHealth(silence_timeout_s=5.0)
    health.heartbeat("eu-west", T0 + 10)
    health.heartbeat("eu-west", T0)  # delayed delivery of an older beat
    assert health.last_heartbeat_ts("eu-west") == T0 + 10
    assert health.is_healthy("eu-west", T0 + 14)


def test_never_heard_from_is_healthy_during_startup_grace_then_partitioned() -> None:
    # Given a tracker expecting three regions, started at T0, only eu-west heartbeating
    health = RegionHealth(silence_timeout_s=5.0, startup_grace_s=30.0, regions=REGIONS)
    health.heartbeat("eu-west", T0)
    # When asked within the grace, Then silent regions still count as healthy
    assert health.healthy_mask(REGIONS, T0 + 3) == 0b111
    # When asked after the grace, Then they are partitioned (eu-west too: it went quiet)
    health.heartbeat("eu-west", T0 + 29)
    assert health.healthy_mask(REGIONS, T0 + 31) == 0b001
    assert health.partitioned(T0 + 31) == ["ap-south", "us-east"]


def test_grace_starts_at_the_first_observation_when_no_start_is_given() -> None:
    health = RegionHealth(silence_timeout_s=5.0, regions=REGIONS)
    assert health.is_healthy("ap-south", T0)
    assert health.is_healthy("ap-south", T0 + 5)
    assert not health.is_healthy("ap-south", T0 + 5.5)


def test_healthy_mask_bits_follow_region_order() -> None:
    health = RegionHealth(silence_timeout_s=5.0, started_ts=T0 - 100)
    health.heartbeat("us-east", T0)
    assert health.healthy_mask(REGIONS, T0 + 1) == 0b010
    assert health.healthy_mask(("us-east", "eu-west"), T0 + 1) == 0b01


def test_invalid_timeout_is_config_error() -> None:
    with pytest.raises(ConfigError):
        RegionHealth(silence_timeout_s=0)


@settings(max_examples=100, deadline=None)
@given(
    beats=st.lists(
        st.tuples(st.sampled_from(REGIONS), st.floats(0, 100, allow_nan=False)), max_size=20
    ),
    at_s=st.floats(0, 200, allow_nan=False),
)
def test_state_round_trips_through_json(beats: list[tuple[str, float]], at_s: float) -> None:
    # Given any sequence of heartbeats
    health = RegionHealth(silence_timeout_s=5.0, regions=("eu-west",), started_ts=T0)
    for region, offset in beats:
        health.heartbeat(region, T0 + offset)
    # When the state goes through JSON (as it would through Redis)
    again = RegionHealth.from_dict(json.loads(json.dumps(health.to_dict())))
    # Then every answer is the same
    now = T0 + at_s
    assert again.healthy_mask(REGIONS, now) == health.healthy_mask(REGIONS, now)
    assert again.partitioned(now) == health.partitioned(now)
    assert again.to_dict() == health.to_dict()
