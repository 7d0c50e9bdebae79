"""Given a region's budget of work above premium in Redis, charges add up across workers."""

from __future__ import annotations

import fakeredis

from scheduler.work_budget import WorkBudget
from stores.keys import Keys
from stores.work_budget_store import RedisWorkBudgetStore


def test_charges_of_two_workers_add_up_and_other_regions_are_untouched() -> None:
    client = fakeredis.FakeRedis()
    a = RedisWorkBudgetStore(client, Keys("w"), WorkBudget(share=0.5, burst_s=0.2))
    b = RedisWorkBudgetStore(client, Keys("w"), WorkBudget(share=0.5, burst_s=0.2))
    # Given two workers of eu-west each spend 0.15 slot-seconds at t=1,000
    assert a.admits("eu-west", 1_000.0)
    a.charge("eu-west", 1_000.0, 0.15)
    assert b.admits("eu-west", 1_000.0)  # 0.3 s of debt: inside the 0.4 s allowance
    b.charge("eu-west", 1_000.0, 0.15)
    # Then the region's debt (0.6 s) is past its allowance until 0.2 s later
    assert not a.admits("eu-west", 1_000.1)
    assert a.admits("eu-west", 1_000.2)
    # And another region's budget is its own
    assert a.admits("us-east", 1_000.0)
