"""An outage folds before per-device alerting, with real workers and beat, default settings.

Given a fleet that falls silent long enough for the dropout sweep (sent by beat, as a
deployment runs it) to look at it while it is silent, the sweep folds each region's
silence into one "ingest_gap" event instead of one dropout alert per device, marks
every silence it folded so the devices' return raises no alert either, and no work is
accelerated for it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from bench.redis_run import RedisRun
from bench.storm import StormConfig, reconnect_flood
from bench.worker_launch import start_control_worker

pytestmark = pytest.mark.integration

#: Premium's bound (PREMIUM_LATENCY_BOUND_MS).
PREMIUM_BOUND_MS = 500.0


@pytest.fixture
def fleet_with_beat(redis_server: str) -> Iterator[RedisRun]:
    prefix = f"t-{uuid.uuid4().hex[:10]}"
    with RedisRun(redis_server, prefix, devices=6_000, seed=7) as run_:
        control = start_control_worker(redis_server, prefix)
        try:
            yield run_
        finally:
            control.terminate()
            control.wait(15)


def test_an_outage_seen_by_the_sweep_is_one_event_per_region_and_no_device_alerts(
    fleet_with_beat: RedisRun,
) -> None:
    # Given 6,000 devices reporting every second until their detectors are warm, then
    # silent for 20 s: past the region's stall bound (10 s) and every device's dropout
    # limit (5 s), with room for a sweep pass or two on a loaded machine
    cfg = StormConfig(
        devices=6_000,
        rate_rps=6_000,
        warm_s=7.0,
        silence_s=20.0,
        resume_rps=3_000,
        resume_s=3.0,
        seed=7,
    )
    # When they come back
    result = reconnect_flood(fleet_with_beat, cfg)
    sweep = result["sweep"]
    # Then the sweep folded most of the fleet into silence events, alerting almost none
    # of them one by one (a device it had not reached yet may still end its silence on
    # a reading, folded downstream)
    assert sweep["folded_devices"] >= 0.9 * cfg.devices, result
    assert sweep["device_alerts"] <= 0.01 * cfg.devices, result
    assert result["device_alerts_after_resume"] <= 0.1 * cfg.devices, result
    # ...which are a handful of incidents, storms of found silence, with nothing hurried
    assert result["incidents"] <= 6, result
    assert {s["storm"] for s in result["storm_incidents"]} == {"ingest_gap"}, result
    assert result["accelerated_readings"] == 0
    assert result["drained"] and result["lost"] == 0
    assert result["premium_p99_ms_after_resume"] < PREMIUM_BOUND_MS, result
