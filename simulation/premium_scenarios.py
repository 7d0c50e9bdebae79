"""Scenarios of premium's guarantee under overload and storms, with the runtime's budgets.

All run the 1M-device fleet with admission as the runtime does it (standard held at
ingest past ``scheduler.admission.WAIT_BUDGET_S`` of measured drain) and the budget of
anomaly work above premium (``scheduler.work_budget``); a reconnect's returns are folded
by screening's rules (``FoldConfig``) and correlated by the runtime's ``Correlator``
(``CorrelatorConfig``: storm threshold, silence wait) in ``simulation.return_flood``.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from scheduler.admission import WAIT_BUDGET_S
from scheduler.work_budget import WorkBudget
from simulation.criteria import LOSSLESS, PREMIUM_BOUND, Criterion, Scenario
from simulation.loads import Modulated, Steady, StepSpike, all_regions
from simulation.scenarios import PREMIUM_TIER, STANDARD_TIER, base_spec, sites
from simulation.spec import AnomalyEvent, SimSpec

#: Region budgets small enough that 3x their capacity is a plausible fleet overload.
OVERLOAD_BUDGET_SLOTS = (12, 12, 16)


def standard_3x_capacity(seed: int) -> SimSpec:
    """Standard offered at 3x every region's capacity for two minutes; premium as usual."""
    spec = base_spec(
        seed, 150.0, disturbances=((0.0, 150.0),), admission_wait_budget_s=WAIT_BUDGET_S,
        anomaly_work=WorkBudget(),
    )  # fmt: skip
    sv = spec.service
    # A reading costs a routine and a screening pass at the same per-slot rate.
    capacity_rps = np.array(OVERLOAD_BUDGET_SLOTS) * sv.routine_rps_per_slot / 2.0
    rate = spec.fleet.rate_rps_by_region_tier().copy()
    rate[:, STANDARD_TIER] = 3.0 * capacity_rps
    return replace(spec, pattern=Steady(1.0, rate), sites=sites(OVERLOAD_BUDGET_SLOTS))


def mass_reconnect(seed: int) -> SimSpec:
    """The whole fleet silent for 100 s, then back at its usual rate (about a fifth of
    capacity): every device's first reading is a dropout alert."""
    spec = base_spec(
        seed, 180.0, disturbances=((20.0, 180.0),), admission_wait_budget_s=WAIT_BUDGET_S,
        anomaly_work=WorkBudget(),
    )  # fmt: skip
    silence = StepSpike(20.0, 100.0, 0.0, all_regions(3))
    per_region = np.bincount(spec.fleet.home_region, minlength=3)
    events = tuple(
        AnomalyEvent(120.0, r, int(n), tier=t, kind="mass reconnect", silence=True)
        for r, n in enumerate(per_region)
        for t in (PREMIUM_TIER, STANDARD_TIER)
    )
    return replace(spec, pattern=Modulated(spec.pattern, silence), anomalies=events)


#: Returns of a reconnect screened ahead of the rest on a loaded machine (per region), the
#: size of their screening batches, and how long the rest's screening lags behind them.
EARLY_RETURNS, EARLY_BATCH_READINGS, LATE_SCREENING_S = 100, 5, 3.0


def mass_reconnect_screened_late(seed: int) -> SimSpec:
    """The mass reconnect on a loaded machine: a hundred premium returns per region
    screened first, a few per batch, and standard's returns 3 s later."""
    spec = mass_reconnect(seed)
    events = tuple(
        replace(e, devices=EARLY_RETURNS, batch_readings=EARLY_BATCH_READINGS)
        if e.tier == PREMIUM_TIER
        else replace(e, t_s=e.t_s + LATE_SCREENING_S)
        for e in spec.anomalies
    )
    return replace(spec, anomalies=events)


PREMIUM_SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("standard_3x_capacity", standard_3x_capacity.__doc__ or "",
                 standard_3x_capacity,
                 (PREMIUM_BOUND, *LOSSLESS, Criterion("backpressured_max", ">", 0.0))),
        Scenario("mass_reconnect", mass_reconnect.__doc__ or "", mass_reconnect,
                 (PREMIUM_BOUND, *LOSSLESS, Criterion("storm_incidents", "<=", 3.0),
                  Criterion("accelerated_readings", "==", 0.0))),
        Scenario("mass_reconnect_screened_late", mass_reconnect_screened_late.__doc__ or "",
                 mass_reconnect_screened_late,
                 (PREMIUM_BOUND, *LOSSLESS, Criterion("storm_incidents", "<=", 3.0),
                  Criterion("accelerated_readings", "==", 0.0))),
    )
}  # fmt: skip
