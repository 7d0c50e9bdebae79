"""The autoscaler and the simulator size a region through one assembly.

Given the same sequence of observations, the deployed autoscaler's sizing (a
worker's ``PoolSizer``, built from Settings, fed ``QueueRates`` as its refresh
thread reads them) and the simulator's (``make_sizer`` under the same budget and
scaling configuration, fed the engine's per-class arrays through
``observe_region``) take the same decisions, tick after tick: the scaler's
window and forecast carry the same state from one tick to the next.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.model import WorkClass, queue_name
from scheduler.pool_sizing import LocalLoad, PoolSizer, region_budget, scaling_config
from scheduler.rate_meter import QueueRates
from scheduler.settings import Settings
from simulation.engine import Simulator
from simulation.pools import make_sizer, observe_region
from simulation.scenarios import SCENARIOS
from workers.profiles import region_queues

REGION = "eu-west"
BUDGET_SLOTS = 16
SETTINGS = Settings(
    region_budget_slots=BUDGET_SLOTS,
    premium_guarantee_slots=4,
    standard_min_slots=2,
    anomaly_burst_slots=1,
    screen_min_slots=2,
)
#: Tasks one slot finishes per second (both paths count tasks here).
SERVICE_RPS = 10.0
#: The simulated classes, named as a data worker's queues in its -Q order.
SIM_QUEUES = tuple(queue_name(REGION, k) for k in ("anomaly", "premium", "screen", "standard"))


@dataclass(frozen=True)
class Tick:
    #: Tasks waiting and tasks arrived over the last second, per SIM_QUEUES entry.
    depth: tuple[int, ...]
    arrived: tuple[int, ...]
    busy_slots: int
    current_slots: int
    #: The region's maintenance pre-drain level.
    drain_level: int


per_queue = st.tuples(*[st.integers(0, 400)] * len(SIM_QUEUES))
ticks = st.lists(
    st.builds(
        Tick,
        depth=per_queue,
        arrived=per_queue,
        busy_slots=st.integers(0, BUDGET_SLOTS),
        current_slots=st.integers(0, BUDGET_SLOTS),
        drain_level=st.integers(0, BUDGET_SLOTS),
    ),
    min_size=1,
    max_size=30,
)


@settings(max_examples=60, deadline=None)
@given(ticks)
def test_the_autoscaler_and_the_simulator_decide_alike(sequence: list[Tick]) -> None:
    # Given one worker of the region (the autoscaler's path) and the simulator's region sizing
    autoscaler = PoolSizer(region_queues(REGION, "data"), SETTINGS)
    simulator = make_sizer(
        "policy", scaling_config(SETTINGS), region_budget(SETTINGS), min_slots=0,
        readings_per_task=1,
    )  # fmt: skip
    for second, tick in enumerate(sequence):
        now_ts = 1_800_000_000.0 + second
        # When each sees the same queues, busy slots, pool size and pre-drain level
        figures = autoscaler.size(
            QueueRates(
                at_ts=now_ts, interval_s=1.0, depth=dict(zip(SIM_QUEUES, tick.depth, strict=True)),
                arrival_rps={q: float(n) for q, n in zip(SIM_QUEUES, tick.arrived, strict=True)},
                taken_rps={}, ingested_rps=0.0,
            ),
            LocalLoad(busy={SIM_QUEUES[-1]: tick.busy_slots}),
            SERVICE_RPS,
            bounds=(0, BUDGET_SLOTS),
            region_current_slots=tick.current_slots,
            maintenance_reserved_slots=tick.drain_level,
        )  # fmt: skip
        sizing = simulator.size(
            observe_region(
                SIM_QUEUES, now_ts, [float(n) for n in tick.depth],
                [float(n) for n in tick.arrived], 1.0, SERVICE_RPS, float(tick.busy_slots),
                tick.current_slots, tick.drain_level,
            )
        )  # fmt: skip
        # Then the region's slots, the pool's target, the maintenance hold and every
        # class's grant agree
        assert figures.region_slots == sizing.region_slots
        assert figures.target_slots == sizing.region_slots
        assert figures.maintenance_slots == sizing.maintenance_slots
        for queue in SIM_QUEUES:
            assert figures.grants[queue] == sizing.by_class[WorkClass(queue.partition(".")[2])]


def test_the_simulator_observes_the_runtimes_queues() -> None:
    # Given a scenario's simulator
    sim = Simulator(SCENARIOS["sudden_spike"].build(0))
    # Then every region's sized queues are queues its data workers consume
    for region, names in zip(sim.regions, sim.queue_names, strict=True):
        assert set(names) <= set(region_queues(region, "data"))
