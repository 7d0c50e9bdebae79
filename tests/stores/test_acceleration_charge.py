"""Given accelerated passes, the region's work budget is charged each pass's delivery too.

The budget (``scheduler.work_budget``) is to hold all slot time above premium spent on
acceleration to its share; a pass's delivery (taking, decoding and acking its message)
is slot time its own clock does not see, so each pass adds ``run_overhead_s``, and a
pass that only found the budget spent still costs that much.
"""

from __future__ import annotations

from typing import Any

import fakeredis
import numpy as np
import pytest
from runtime_doubles import MakeRuntime

from runtime.runtime import Runtime
from scheduler.work_budget import WorkBudget
from stores.keys import Keys
from stores.memory_control import MemoryWorkBudgetStore
from stores.work_budget_store import RedisWorkBudgetStore
from tasks.accelerate import handle_accelerate

NOW = 1_700_000_000.0
#: No burst: a pass may start only once every earlier pass is paid for.
BUDGET = WorkBudget(share=0.1, burst_s=0.0, run_overhead_s=0.01)


def payload() -> dict[str, Any]:
    return {"region": "eu-west", "incident_id": "i1", "device_id": np.array([1], "<u8").tobytes()}


def budgeted_runtime(kind: str, make_runtime: MakeRuntime) -> Runtime:
    rt = make_runtime()
    rt.clock = lambda: NOW  # the passes below take no time by this clock
    if kind == "redis":
        rt.stores.work_budget = RedisWorkBudgetStore(fakeredis.FakeRedis(), Keys("t"), BUDGET)
    else:
        rt.stores.work_budget = MemoryWorkBudgetStore(BUDGET)
    return rt


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_each_pass_is_charged_its_delivery_a_skipped_one_included(
    kind: str, make_runtime: MakeRuntime
) -> None:
    rt = budgeted_runtime(kind, make_runtime)
    budget = rt.stores.work_budget
    # Given a pass that found nothing to apply and took no time by its own clock
    assert handle_accelerate(rt, payload()) == 0
    # Then it still owes its delivery: 10 ms at a 10% share is 100 ms of debt
    assert not budget.admits("eu-west", NOW + 0.09)
    assert budget.admits("eu-west", NOW + 0.1)
    # When another pass arrives meanwhile, it is skipped and charged its delivery
    assert handle_accelerate(rt, payload()) == 0
    assert rt.stores.state.counters()["accelerate_skipped_budget"] == 1
    assert not budget.admits("eu-west", NOW + 0.19)
    assert budget.admits("eu-west", NOW + 0.2)


def test_a_runs_cost_is_its_measured_time_plus_its_delivery() -> None:
    assert BUDGET.run_cost_s(0.05) == pytest.approx(0.06)
    assert BUDGET.run_cost_s(-1.0) == pytest.approx(0.01)  # a clock stepping back
    with pytest.raises(ValueError):
        WorkBudget(run_overhead_s=-0.01)
