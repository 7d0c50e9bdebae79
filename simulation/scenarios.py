"""Named scenarios: the critical user scenarios, the edge cases, and a simulated day.

Each scenario is a SimSpec built on the same 1,000,000-device fleet plus the
success criteria it must meet (``simulation.criteria``); tests and ``iotsched
simulate`` both run them through ``run_scenario``.
"""

from __future__ import annotations

import functools
from dataclasses import replace
from typing import Any

import numpy as np

from scheduler.geography import DEFAULT_SITES, RegionSite
from simulation.criteria import (
    ANOMALY_STARTS,
    DELIVERED,
    DETECTS,
    LEAN,
    LOSSLESS,
    MAINTENANCE_ON_TIME,
    PREMIUM_BOUND,
    REACTS,
    Criterion,
    Outcome,
    Scenario,
    run_spec,
)
from simulation.detector_cal import detection_profile
from simulation.fleet import Fleet, generate_fleet
from simulation.loads import (
    EventBursts,
    LoadPattern,
    Modulated,
    Product,
    Ramp,
    Steady,
    StepSpike,
    all_regions,
    daily,
    one_region,
)
from simulation.spec import (
    DEFAULT_START_TS,
    AnomalyEvent,
    MaintenanceWindow,
    Partition,
    SimSpec,
)

EU, US, AP = 0, 1, 2
PREMIUM_TIER, STANDARD_TIER = 0, 1
#: Region budgets (the cloud limit) for the 1M fleet at ~1M readings/s.
BUDGET_SLOTS = (48, 48, 64)


@functools.lru_cache(maxsize=4)
def fleet_1m(seed: int = 0) -> Fleet:
    """The 1,000,000-device fleet every scenario runs on (cached: ~0.5 s to build)."""
    return generate_fleet(1_000_000, seed=seed)


def sites(budgets: tuple[int, ...] = BUDGET_SLOTS) -> tuple[RegionSite, ...]:
    return tuple(
        RegionSite(s.name, s.lat_deg, s.lon_deg, b)
        for s, b in zip(DEFAULT_SITES, budgets, strict=True)
    )


def _steady(fleet: Fleet, factor: float = 1.0) -> LoadPattern:
    return Steady(factor, fleet.rate_rps_by_region_tier())


def _tier_mask(fleet: Fleet, tier: int) -> LoadPattern:
    """The fleet's load restricted to one tier."""
    rate = fleet.rate_rps_by_region_tier().copy()
    rate[:, [t for t in range(rate.shape[1]) if t != tier]] = 0.0
    return Steady(1.0, rate)


def base_spec(seed: int, duration_s: float, **kw: Any) -> SimSpec:
    fleet = fleet_1m()
    return SimSpec(
        fleet=fleet, sites=sites(), pattern=_steady(fleet), duration_s=duration_s, seed=seed, **kw
    )


def sudden_spike(seed: int) -> SimSpec:
    """eu-west load jumps 4× for two minutes out of nowhere."""
    spec = base_spec(seed, 360.0, load_steps=((60.0, (EU,)),), disturbances=((60.0, 180.0),))
    spike = StepSpike(60.0, 120.0, 4.0, one_region(3, EU))
    return replace(spec, pattern=Modulated(spec.pattern, spike))


def mixed_tiers_peak(seed: int) -> SimSpec:
    """At peak, standard offered load is 12× normal (about 2× every budget), premium 1.5×."""
    fleet = fleet_1m()
    pattern = _tier_mask(fleet, PREMIUM_TIER) * 1.5 + _tier_mask(fleet, STANDARD_TIER) * 12.0
    return replace(base_spec(seed, 240.0), pattern=pattern, disturbances=((0.0, 240.0),))


def geo_diverse(seed: int) -> SimSpec:
    """Half an hour of follow-the-sun load from devices on every continent."""
    fleet = fleet_1m()
    pattern = daily(1.0, fleet.rate_rps_by_region_tier() / 1.0, seed=seed, start_utc_hour=13.0)
    yesterday = daily(
        1.0, fleet.rate_rps_by_region_tier(), seed=_yesterday_seed(seed), start_utc_hour=13.0
    )
    return replace(base_spec(seed, 1800.0, step_s=0.5), pattern=pattern, history_pattern=yesterday)


def anomalies_under_load(seed: int) -> SimSpec:
    """us-east standard load goes 3.5× past its budget and backs up for minutes; anomalies hit."""
    fleet = fleet_1m()
    rate = fleet.rate_rps_by_region_tier()
    extra = np.zeros_like(rate)
    extra[US, STANDARD_TIER] = 2.5 * rate[US, STANDARD_TIER]
    from_30s = Ramp(30.0, 30.001, 0.0, 1.0, all_regions(3))
    pattern = _steady(fleet) + Modulated(Steady(1.0, extra), from_30s)
    kinds = ("spike", "dip", "shift")
    measured = {kind: detection_profile(kind) for kind in kinds}
    events = tuple(
        AnomalyEvent(
            60.0 + 20.0 * k, US, 2_000 + 1_000 * (k % 4), tier=k % 2,
            readings_to_detect=max((1, *measured[kinds[k % 3]][0])), kind=kinds[k % 3],
            readings_needed=measured[kinds[k % 3]][0], detected_share=measured[kinds[k % 3]][1],
        )
        for k in range(8)
    )  # fmt: skip
    spec = base_spec(seed, 300.0, anomalies=events, disturbances=((0.0, 300.0),))
    return replace(spec, pattern=pattern, sites=sites((48, 16, 64)))


def maintenance_normal(seed: int) -> SimSpec:
    """A 2-minute window holding 12 slots in us-east under normal load."""
    window = MaintenanceWindow(US, 120.0, 120.0, 12)
    return base_spec(seed, 360.0, maintenance=(window,))


def spike_beyond_capacity(seed: int) -> SimSpec:
    """Every region at 3× for two minutes with budgets halved: past what scaling can give."""
    spec = base_spec(
        seed, 420.0, load_steps=((60.0, (EU, US, AP)),), disturbances=((60.0, 180.0),),
        backlog_cap_readings=30_000_000.0,
    )  # fmt: skip
    spike = StepSpike(60.0, 120.0, 3.0, all_regions(3))
    return replace(spec, pattern=Modulated(spec.pattern, spike), sites=sites((24, 24, 32)))


def region_partition(seed: int) -> SimSpec:
    """eu-west is cut off for two minutes: EU-only data waits, the rest fails over."""
    return base_spec(seed, 420.0, partitions=(Partition(EU, 60.0, 180.0),))


def resource_exhaustion(seed: int) -> SimSpec:
    """Budgets cut to a third while load sits at 1.5×: nowhere to fail over to."""
    spec = base_spec(
        seed, 300.0, disturbances=((0.0, 300.0),), backlog_cap_readings=20_000_000.0,
    )  # fmt: skip
    return replace(spec, sites=sites((16, 16, 22)), pattern=_steady(spec.fleet, 1.5))


def cascading_anomalies(seed: int) -> SimSpec:
    """An incident spreads over ap-south's device groups: 10 waves, 10,000 devices at most."""
    needed, share = detection_profile("shift")
    events = tuple(
        AnomalyEvent(
            30.0 + 6.0 * k,
            AP,
            1_000 * (k + 1),
            tier=STANDARD_TIER,
            readings_to_detect=max((1, *needed)),
            kind="cascade of level shifts",
            readings_needed=needed,
            detected_share=share,
        )
        for k in range(10)
    )
    return base_spec(seed, 240.0, anomalies=events)


def failed_maintenance(seed: int) -> SimSpec:
    """Compaction fails every try in its window, is rebooked past a conflicting window, succeeds."""
    windows = (
        MaintenanceWindow(EU, 60.0, 120.0, 10, failing_tries=3),
        MaintenanceWindow(EU, 180.0, 120.0, 30, operation="rebuild_registry_snapshot"),
    )
    return base_spec(seed, 600.0, maintenance=windows)


def _yesterday_seed(seed: int) -> int:
    """The seed of the day before a run seeded ``seed``: its own noise, never the scored day's."""
    return seed + 1_000_003


def yesterday(seed: int, start_utc_hour: float = 0.0, amplitude: float = 0.4) -> LoadPattern:
    """The day before the simulated day: same follow-the-sun, its own noise, its own level.

    Days differ: yesterday's whole level is drawn within ±5 % of today's, so a
    forecast learned from it is good but never exact.
    """
    fleet = fleet_1m()
    level = float(np.random.default_rng(_yesterday_seed(seed)).uniform(0.95, 1.05))
    return daily(
        level, fleet.rate_rps_by_region_tier(), seed=_yesterday_seed(seed), amplitude=amplitude,
        start_utc_hour=start_utc_hour,
    )  # fmt: skip


#: The simulated day's unpredictable spikes: (hour into the run, region, factor), 10 min each.
DAY_SPIKES: tuple[tuple[float, int, float], ...] = ((9.5, EU, 3.0), (17.2, AP, 2.5))
SPIKE_S = 600.0


def simulated_day(
    seed: int,
    scaler: str = "policy",
    hours: float = 24.0,
    start_utc_hour: float = 0.0,
    spikes: tuple[tuple[float, int, float], ...] = DAY_SPIKES,
    keda_list_length: int = 1,
) -> SimSpec:
    """24 h of the 1M fleet: follow-the-sun, noise, and two spikes nobody predicted.

    Scalers that forecast learn the daily curve from ``yesterday`` (a different
    day) and online from the run; none sees the scored day's generator.
    """
    fleet = fleet_1m()
    steps = tuple(StepSpike(h * 3600, SPIKE_S, f, one_region(3, r)) for h, r, f in spikes)
    base = daily(
        1.0, fleet.rate_rps_by_region_tier(), seed=seed, amplitude=0.4,
        start_utc_hour=start_utc_hour,
    )  # fmt: skip
    return SimSpec(
        fleet=fleet,
        sites=sites(),
        pattern=Modulated(base, Product(steps)) if steps else base,
        duration_s=hours * 3600.0,
        step_s=1.0,
        seed=seed,
        start_ts=DEFAULT_START_TS + start_utc_hour * 3600.0,
        scaler=scaler,
        history_pattern=yesterday(seed, start_utc_hour),
        keda_list_length=keda_list_length,
        load_steps=tuple((h * 3600, (r,)) for h, r, _ in spikes),
        disturbances=tuple((h * 3600, h * 3600 + SPIKE_S) for h, _, _ in spikes),
    )


def event_bursts(seed: int) -> SimSpec:
    """Bursts set off by outside events (storms, firmware pushes) at seeded times and regions."""
    spec = base_spec(seed, 900.0, step_s=0.2)
    bursts = EventBursts(seed, 3, 900.0, rate_per_h=12.0, peak_factor=2.5, decay_s=60.0)
    return replace(spec, pattern=Modulated(spec.pattern, bursts))


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("sudden_spike", sudden_spike.__doc__ or "", sudden_spike,
                 (REACTS, PREMIUM_BOUND, LEAN, *LOSSLESS)),
        Scenario("mixed_tiers_peak", mixed_tiers_peak.__doc__ or "", mixed_tiers_peak,
                 (PREMIUM_BOUND, *LOSSLESS)),
        Scenario("geo_diverse", geo_diverse.__doc__ or "", geo_diverse,
                 (Criterion("home_region_pct", ">=", 99.0), PREMIUM_BOUND, LEAN, *LOSSLESS)),
        Scenario("anomalies_under_load", anomalies_under_load.__doc__ or "", anomalies_under_load,
                 (DETECTS, ANOMALY_STARTS, PREMIUM_BOUND, *LOSSLESS)),
        Scenario("maintenance_normal", maintenance_normal.__doc__ or "", maintenance_normal,
                 (MAINTENANCE_ON_TIME, PREMIUM_BOUND, LEAN, *LOSSLESS)),
        Scenario("spike_beyond_capacity", spike_beyond_capacity.__doc__ or "",
                 spike_beyond_capacity, (REACTS, PREMIUM_BOUND, *LOSSLESS), critical=False),
        Scenario("region_partition", region_partition.__doc__ or "", region_partition,
                 (PREMIUM_BOUND, *LOSSLESS, DELIVERED,
                  Criterion("held_at_ingest", "==", 0.0), Criterion("held_at_ingest_max", ">", 0.0),
                  Criterion("cross_region_gb", ">", 0.0)), critical=False),
        Scenario("resource_exhaustion", resource_exhaustion.__doc__ or "", resource_exhaustion,
                 (PREMIUM_BOUND, *LOSSLESS), critical=False),
        Scenario("cascading_anomalies", cascading_anomalies.__doc__ or "", cascading_anomalies,
                 (DETECTS, ANOMALY_STARTS, PREMIUM_BOUND, *LOSSLESS), critical=False),
        Scenario("failed_maintenance", failed_maintenance.__doc__ or "", failed_maintenance,
                 (MAINTENANCE_ON_TIME, PREMIUM_BOUND, *LOSSLESS), critical=False),
        Scenario("event_bursts", event_bursts.__doc__ or "", event_bursts,
                 (PREMIUM_BOUND, *LOSSLESS), critical=False),
        Scenario("simulated_day", simulated_day.__doc__ or "", simulated_day,
                 (REACTS, PREMIUM_BOUND, LEAN, *LOSSLESS)),
    )
}  # fmt: skip


def run_scenario(name: str, seed: int = 0) -> Outcome:
    """Run a named scenario; raises KeyError naming the known ones for an unknown name."""
    if name not in SCENARIOS:
        raise KeyError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}")
    scenario = SCENARIOS[name]
    return run_spec(scenario, scenario.build(seed))
