"""Premium goes ahead of everything else with real workers, default settings, through the producer.

Given standard offered at three times what the region drains, premium is served
ahead of the standard backlog (admission control holds standard back, standard
screening ranks below premium) and every reading is still processed. Given a fleet
that falls silent and comes back, the reconnect folds into a handful of incidents, no
accelerated work is spent on it, and premium is not held up by the storm.

These tests assert the mechanism, not the figure: premium's wait is a small fraction
of standard's, and within its bound up to ``CI_SLACK`` for a loaded 2-core CI (the
failures they guard against were waits of tens of seconds). The 500 ms figure itself is
measured by ``iotsched bench`` and ``iotsched storm-bench`` on a quiet machine.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from bench.loadrun import SteadyPace, drive, wait_drained
from bench.redis_run import RedisRun
from bench.storm import StormConfig, reconnect_flood
from ingest.synthetic import SyntheticStream
from scheduler.geography import DEFAULT_SITES
from scheduler.latency import counts_since, percentile_ms
from scheduler.registry import generate_registry
from stores.protocols import processed_readings

pytestmark = pytest.mark.integration

#: Premium's bound (PREMIUM_LATENCY_BOUND_MS).
PREMIUM_BOUND_MS = 500.0
#: Tests run beside other work on a 2-core CI machine: timings there stretch several-fold.
CI_SLACK = 4.0
METRICS = tuple(f"m{i}" for i in range(16))


@pytest.fixture
def one_region_run(redis_server: str) -> Iterator[RedisRun]:
    """Every device in eu-west with 5 % premium, readings of eight metrics: one region
    worker, whose work per reading (detection and rollups per metric) is several times
    the producer's, so one producer can offer it several times what it drains."""
    registry = generate_registry(20_000, seed=5, sites=(DEFAULT_SITES[0],), premium_share=0.05)
    prefix = f"t-{uuid.uuid4().hex[:10]}"
    with RedisRun(redis_server, prefix, registry=registry, metrics=METRICS) as run_:
        yield run_


def test_standard_offered_at_three_times_capacity_leaves_premium_ahead_of_the_backlog(
    one_region_run: RedisRun,
) -> None:
    run_ = one_region_run
    assert run_.registry is not None
    stream = SyntheticStream(run_.registry, n_metrics=len(METRICS), seed=5)
    # Given the region's capacity, measured by offering 200,000 readings as fast as the
    # producer can (admission control keeps the worker busy, never idle)
    calibration = drive(run_.producer, stream, 200_000, None, 5_000)
    _, drained_ts = wait_drained(run_.store, 60.0)
    capacity_rps = 200_000 / (drained_ts - calibration.started_ts)
    before = run_.store.latency_histogram("ingest", "premium")
    standard_before = run_.store.latency_histogram("ingest", "standard")
    processed_before = processed_readings(run_.store.counters())
    # When the fleet offers 6 x that for 3 s, paced as devices send (more than the 3 x
    # asked for: the routine worker runs niced, so while the producer offers flat out
    # during calibration the worker drains less than it does beside a paced producer)
    offered_rps = 6.0 * capacity_rps
    overload = drive(
        run_.producer, stream, int(offered_rps * 3.0), None, 2_000, pace=SteadyPace(offered_rps)
    )
    drained, done_ts = wait_drained(run_.store, 120.0)
    # Then the offered multiple was real: at least 3 x what the region drained meanwhile
    drained_rps = (processed_readings(run_.store.counters()) - processed_before) / (
        done_ts - overload.started_ts
    )
    print("capacity", capacity_rps, "offered", overload.offered_rps, "drained", drained_rps)
    assert overload.offered_rps >= 3.0 * drained_rps
    # And standard was held back and offered again, never dropped (held by admission
    # control; on a machine too loaded for the producer to keep its schedule, by the
    # gateway itself, premium first)
    assert overload.pushed_back_readings + overload.deferred > 0
    assert drained and overload.accepted == overload.offered
    # And premium went ahead of the standard backlog: its slowest reading waited a small
    # fraction of what a typical standard reading waited (latency counted from the
    # schedule's offer instant), and within its bound up to CI slack
    premium = counts_since(run_.store.latency_histogram("ingest", "premium"), before)
    standard = counts_since(run_.store.latency_histogram("ingest", "standard"), standard_before)
    assert sum(premium.values()) > 1_000
    premium_p99 = percentile_ms(premium, 99)
    standard_p50 = percentile_ms(standard, 50)
    assert premium_p99 is not None and standard_p50 is not None
    assert premium_p99 < standard_p50 / 4, (premium_p99, standard_p50)
    assert premium_p99 < CI_SLACK * PREMIUM_BOUND_MS, (premium_p99, standard_p50)


@pytest.fixture
def fleet_run(redis_server: str) -> Iterator[RedisRun]:
    with RedisRun(redis_server, f"t-{uuid.uuid4().hex[:10]}", devices=6_000, seed=6) as run_:
        yield run_


def test_a_mass_reconnect_is_a_handful_of_incidents_and_does_not_hold_premium_up(
    fleet_run: RedisRun,
) -> None:
    # Given 6,000 devices reporting every second for 7 s (their detectors warm), then
    # silent for 7 s (past their 5 s dropout limit), then all coming back
    cfg = StormConfig(
        devices=6_000,
        rate_rps=6_000,
        warm_s=7.0,
        silence_s=7.0,
        resume_rps=3_000,
        resume_s=3.0,
        seed=6,
    )
    result = reconnect_flood(fleet_run, cfg)
    # Then every returning device was seen ending its silence: screening folded most
    # returns into silence events, the rest (small batches) were dropout alerts...
    folded = result["screening"]["folded_returns"]
    assert folded + result["device_alerts_after_resume"] >= 0.9 * cfg.devices
    assert folded > 0 and result["screening"]["silence_events"] < folded
    # ...which folded into a handful of incidents: one storm per region, however the
    # returns were spread over batches (on a loaded machine premium's returns are screened
    # seconds ahead of standard's, a few per group per batch; they wait for the region's
    # storm instead of paging per group). Slack of one more per region for a loaded CI.
    print("mass reconnect incidents:", result["incidents"], result["storm_incidents"])
    regions = len(fleet_run.settings.regions)
    assert result["incidents"] <= 2 * regions, result["incidents"]
    assert {s["storm"] for s in result["storm_incidents"]} <= {"ingest_gap", "mass_reconnect"}
    assert {s["region"] for s in result["storm_incidents"]} == set(fleet_run.settings.regions)
    # And no work was hurried for it, nothing was lost, and premium kept its bound
    assert result["accelerated_readings"] == 0
    assert result["drained"] and result["lost"] == 0
    # (from the resumption on: the reconnect and its storm, not the workers' cold start)
    assert result["premium_p99_ms_after_resume"] < CI_SLACK * PREMIUM_BOUND_MS, result
