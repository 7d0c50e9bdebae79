"""Each scenario, run on the 1,000,000-device fleet, meets its success criteria.

The criteria are the issue's: capacity follows load within 30 s (aim 5 s),
premium p99 < 500 ms, anomalies detected within 5 s, wastage (idle ÷
provisioned slot-seconds) < 5 % in normal operation, maintenance on time,
nothing lost, residency never violated.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from scheduler.defaults import DETECTION_BOUND_S, PREMIUM_LATENCY_BOUND_MS
from scheduler.hpa_baselines import list_length_for_delay
from scheduler.scaling import ScalingConfig
from simulation.compare import side_by_side
from simulation.criteria import WASTAGE_BOUND_PCT, Outcome, run_spec
from simulation.latency import tier_latency
from simulation.pools import SCALERS
from simulation.premium_scenarios import PREMIUM_SCENARIOS
from simulation.scenarios import EU, SCENARIOS, US, run_scenario, simulated_day
from simulation.trace import PREMIUM, STANDARD

pytestmark = pytest.mark.scenario


@functools.cache
def outcome(name: str) -> Outcome:
    return run_scenario(name, seed=0)


# The 24 h day takes about a minute on a quiet 2-core machine and past 120 s on a slow
# one; a test timed out mid-run leaves the cache empty, so every test of the day ran it
# again and timed out too. Whichever of them runs first may take this long.
DAY_TIMEOUT_S = 600


def every_scenario() -> list[object]:
    return [
        pytest.param(n, marks=pytest.mark.timeout(DAY_TIMEOUT_S)) if n == "simulated_day" else n
        for n in SCENARIOS
    ]


@pytest.mark.parametrize("name", every_scenario())
def test_scenario_meets_its_success_criteria(name: str) -> None:
    # Given a named scenario  When it runs  Then every criterion it declares holds
    result = outcome(name)
    failed = {c.describe(): result.figures.get(c.figure) for c in result.failed()}
    assert not failed, f"{name} missed {failed}"


@pytest.mark.parametrize("name", every_scenario())
def test_every_reading_is_accounted_for(name: str) -> None:
    # Then accepted = processed + queued + held at ingest, exactly; residency holds
    f = outcome(name).figures
    assert f["accepted"] > 0
    assert f["processed"] + f["queued"] + f["held_at_ingest"] == f["accepted"]
    assert f["lost"] == 0
    assert f["residency_violations"] == 0


def test_sudden_spike_capacity_follows_within_the_aim_of_5_s() -> None:
    # Given eu-west's load jumping 4x at t = 60 s
    result = outcome("sudden_spike")
    tr = result.trace
    # Then ready slots cover the new load within 5 s (the seed allows 30 s)
    assert result.figures["scaling_reaction_s"] <= 5.0
    # And the pool grows only in eu-west, and shrinks back after the spike
    before, during, after = (round(t / tr.spec.step_s) for t in (50.0, 120.0, 350.0))
    assert tr.provisioned[during, EU] >= 2 * tr.provisioned[before, EU]
    assert tr.provisioned[during, US] == tr.provisioned[before, US]
    assert tr.provisioned[after, EU] < tr.provisioned[during, EU]


def test_premium_holds_while_standard_is_overloaded_and_standard_still_moves() -> None:
    # Given standard offered at about twice every budget
    f = outcome("mixed_tiers_peak").figures
    tr = outcome("mixed_tiers_peak").trace
    # Then premium p99 stays under its bound while standard waits far longer
    assert f["premium_p99_ms"] < PREMIUM_LATENCY_BOUND_MS
    assert f["standard_p99_ms"] > 10 * f["premium_p99_ms"]
    # And standard is served every second of the run (its minimum share), with backpressure
    per_s = round(1.0 / tr.spec.step_s)
    standard_per_s = tr.served[:, :, STANDARD].sum(axis=1).reshape(-1, per_s).sum(axis=1)
    assert standard_per_s.min() > 0
    assert f["backpressured_max"] > 0


def test_geo_diverse_keeps_data_home_and_costs_less_than_round_robin() -> None:
    f = outcome("geo_diverse").figures
    assert f["home_region_pct"] >= 99.0
    assert f["cross_region_cost"] < f["round_robin_cross_region_cost"]
    assert f["round_robin_cross_region_gb"] > 0


def test_anomalies_are_detected_within_5_s_while_routine_work_backs_up() -> None:
    # Given us-east's standard work backed up for minutes
    result = outcome("anomalies_under_load")
    f = result.figures
    us_std = tier_latency(result.trace, STANDARD)
    assert us_std.percentile_ms(99, np.array([US])) > 10_000.0
    # Then anomalies are still screened within the bound, and their workflows start at once
    assert f["detection_p99_s"] < DETECTION_BOUND_S
    assert f["anomaly_start_p99_ms"] < 1_000.0
    assert len(result.trace.anomaly_enqueued) == len(result.trace.spec.anomalies)


def test_cascade_over_10_000_devices_is_screened_within_bound() -> None:
    result = outcome("cascading_anomalies")
    assert sum(e.devices for e in result.trace.spec.anomalies) >= 10_000
    assert result.figures["detection_p99_s"] < DETECTION_BOUND_S
    assert len(result.trace.anomaly_enqueued) == len(result.trace.spec.anomalies)


def test_maintenance_holds_its_slots_on_time_and_data_keeps_flowing() -> None:
    # Given a 12-slot window in us-east over [120, 240) s
    result = outcome("maintenance_normal")
    tr, f = result.trace, result.figures
    step = tr.spec.step_s
    inside = slice(round(121 / step), round(239 / step))
    # Then it starts on time, holds exactly its slots, and data never uses them
    assert f["maintenance_start_delay_s"] < 1.0
    assert np.all(tr.maintenance_slots[inside, US] == 12)
    assert np.all(tr.provisioned[inside, US] <= tr.spec.sites[US].capacity_slots - 12)
    # And data processing pre-drains: the pool limit drops before the window opens
    assert tr.data_cap[round(100 / step), US] == tr.spec.sites[US].capacity_slots - 12
    assert f["premium_p99_ms"] < PREMIUM_LATENCY_BOUND_MS


def test_failed_maintenance_is_rebooked_past_the_conflict_and_then_succeeds() -> None:
    runs = outcome("failed_maintenance").figures["maintenance_runs"]
    first, conflicting, rebooked = runs
    assert first["state"] == "exhausted"
    assert first["rebooked_as"] == rebooked["reservation_id"]
    # The next feasible window is after the conflicting 30-slot window ends at 300 s
    assert rebooked["start_s"] == 300.0
    assert conflicting["state"] == "succeeded"
    assert rebooked["state"] == "succeeded"
    assert rebooked["attempt"] == 1
    assert max(r["start_delay_s"] for r in runs) < 1.0


def test_spike_beyond_capacity_fills_the_budget_and_pushes_back_explicitly() -> None:
    result = outcome("spike_beyond_capacity")
    tr, f = result.trace, result.figures
    # Then every region reaches its whole budget within 30 s of the spike
    assert f["scaling_reaction_s"] <= 30.0
    peak = tr.ready[round(120 / tr.spec.step_s)]
    assert list(peak) == [s.capacity_slots for s in tr.spec.sites]
    # And ingest answers with backpressure rather than dropping; all is drained afterwards
    assert f["backpressured_max"] > 0
    assert f["held_at_ingest"] == 0 and f["queued_drain_s"] < 1.0
    assert f["premium_p99_ms"] < PREMIUM_LATENCY_BOUND_MS


def test_partition_holds_eu_only_data_and_delivers_it_after_healing() -> None:
    result = outcome("region_partition")
    tr, f = result.trace, result.figures
    step = tr.spec.step_s
    # While eu-west is cut off, EU-only readings wait at ingest and nothing is served there
    mid = round(120 / step)
    assert tr.buffered[mid] > 0
    assert tr.served[mid, EU].sum() == 0
    # Others fail over: us-east and ap-south serve more than their own home load
    assert f["cross_region_gb"] > 0
    # After healing everything is delivered; premium in the healthy regions held its bound
    assert f["held_at_ingest"] == 0 and f["queued_drain_s"] < 1.0
    prem = tier_latency(tr, PREMIUM)
    assert prem.percentile_ms(99, np.array([1, 2])) < PREMIUM_LATENCY_BOUND_MS


def test_resource_exhaustion_pushes_back_and_never_starves_standard() -> None:
    result = outcome("resource_exhaustion")
    tr, f = result.trace, result.figures
    assert f["backpressured_max"] > 0
    assert np.all(tr.ready <= np.array([s.capacity_slots for s in tr.spec.sites]))
    late = slice(round(200 / tr.spec.step_s), None)
    assert tr.served[late, :, STANDARD].sum() > 0
    assert f["premium_p99_ms"] < PREMIUM_LATENCY_BOUND_MS


@pytest.mark.timeout(DAY_TIMEOUT_S)
def test_simulated_day_wastes_under_5_pct_with_both_tiers_bounded() -> None:
    # Given the 24 h day: follow-the-sun, noise, two unpredictable spikes
    f = outcome("simulated_day").figures
    # Then under 5 % of provisioned slot-seconds sit idle in normal operation,
    # whole-slot rounding at night included (it alone would cost more than 4 %)
    assert f["wastage_pct"] < WASTAGE_BOUND_PCT
    assert f["granularity_floor_pct"] > 4.0
    # And premium holds its bound all day while standard waits well under 2 s
    assert f["premium_p99_ms"] < PREMIUM_LATENCY_BOUND_MS
    assert f["standard_p99_ms"] < 2_000.0
    assert f["standard_p99_disturbed_ms"] < 2_000.0
    assert f["lost"] == 0


def test_side_by_side_holds_the_policy_to_its_bounds_and_every_row_to_its_settings() -> None:
    # Given two hours of the day from 08:00 UTC with a 3x eu-west spike after one hour,
    # run under the policy and every baseline, each also with a forecast floor
    rows = side_by_side(0, hours=2.0, start_utc_hour=8.0, spikes=((1.0, EU, 3.0),))
    assert set(rows) == set(SCALERS)
    policy = rows["policy"]
    # Then the policy reacts within the aim and wastes under the bound, premium within its own
    assert policy["scaling_reaction_s"] <= 5.0
    assert policy["wastage_pct"] < WASTAGE_BOUND_PCT
    assert policy["premium_p99_ms"] < PREMIUM_LATENCY_BOUND_MS
    # And no scaler loses a reading
    assert all(r["lost"] == 0 for r in rows.values())
    # And each baseline runs as configured: the HPA at the policy's own target,
    # KEDA at the listLength matching the policy's queue wait, forecasts from yesterday
    target = f"{ScalingConfig().target_utilization:.0%}"
    assert f"CPU target {target}" in rows["hpa"]["settings"]
    length = list_length_for_delay(policy["queue_wait_ms"] / 1000.0, 5_000, 60_000.0)
    assert f"listLength {length} per replica, polling 30 s" in rows["keda"]["settings"]
    assert "scale-down window 300 s" in rows["keda"]["settings"]
    for name in ("celery", "hpa", "keda"):
        forecast = rows[f"{name}+forecast"]["settings"]
        assert forecast.startswith(rows[name]["settings"]) and "yesterday's curve" in forecast
    assert "yesterday's curve" in policy["settings"]


def test_the_forecast_learns_from_a_different_day_than_the_one_scored() -> None:
    # Given the simulated day's spec
    spec = simulated_day(0, "policy", hours=1.0)
    assert spec.history_pattern is not None
    # Then yesterday's traffic is its own: at the same times of day it differs
    # second by second from the scored day's (its own noise and level)
    t = np.arange(0.0, 3_600.0, 1.0)
    today = spec.pattern.rate_rps(t).sum(axis=(1, 2))
    before = spec.history_pattern.rate_rps(t).sum(axis=(1, 2))
    ratio = today / before
    assert np.std(ratio) > 0.003  # independent noise, not the same draws
    assert abs(float(np.mean(ratio)) - 1.0) > 1e-3  # its own level


@pytest.mark.parametrize("name", ["mass_reconnect", "mass_reconnect_screened_late"])
def test_a_reconnect_flood_is_one_incident_per_region_and_premium_keeps_its_bound(
    name: str,
) -> None:
    # Given the whole fleet silent for 100 s, then back; its returns folded by screening's
    # rules and correlated by the runtime's correlator (on a loaded machine: a few premium
    # returns per batch screened first, standard's seconds later)
    scenario = PREMIUM_SCENARIOS[name]
    result = run_spec(scenario, scenario.build(0))
    f = result.figures
    # Then each region raised one incident, a region-wide reconnect, with no work hurried
    incidents = list(result.trace.silence_incidents.values())
    assert sorted(i.region for i in incidents) == sorted(result.trace.regions)
    assert {(i.group, i.storm) for i in incidents} == {("*", "mass_reconnect")}
    assert f["accelerated_readings"] == 0
    # And premium kept its bound through the reconnect
    assert f["premium_p99_disturbed_ms"] < PREMIUM_LATENCY_BOUND_MS
