"""Each region's work budget state (scheduler.work_budget) in Redis: one float per region.

Charged with a short Lua script, so workers of one region charging at once never lose
each other's cost; read with a GET. The key expires once the debt is paid.
"""

from __future__ import annotations

import redis

from scheduler.work_budget import WorkBudget
from stores.keys import Keys

_CHARGE = """
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local now = tonumber(ARGV[1])
if tat < now then tat = now end
tat = tat + tonumber(ARGV[2])
redis.call('SET', KEYS[1], tostring(tat), 'PX', math.max(1, math.ceil((tat - now) * 1000)))
return tostring(tat)
"""


class RedisWorkBudgetStore:
    def __init__(self, client: redis.Redis, keys: Keys, budget: WorkBudget | None = None) -> None:
        self.client = client
        self.keys = keys
        self.budget = budget or WorkBudget()
        self._charge = client.register_script(_CHARGE)

    def admits(self, region: str, now_ts: float) -> bool:
        raw = self.client.get(self.keys.work_budget(region))
        return self.budget.admits(float(raw) if raw is not None else 0.0, now_ts)

    def charge(self, region: str, now_ts: float, cost_s: float) -> None:
        debt_s = max(0.0, cost_s) / self.budget.share
        self._charge(keys=[self.keys.work_budget(region)], args=[repr(now_ts), repr(debt_s)])
