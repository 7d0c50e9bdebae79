"""The platform's maintenance operations on Redis: each idempotent, resumable, and stopped
at a deadline.

An operation is called with a resume cursor (its last SCAN position, "" to
start) and the deadline (the window's cutoff). It works in chunks and returns
when done or when the deadline has passed, with the cursor to resume from, so
work cut off at a window's end continues in the rebooked window instead of
starting over. Running one twice does no harm: every step is "make it so".
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import redis

from scheduler import defaults
from scheduler.errors import ConfigError
from scheduler.maintenance_plan import OpOutcome
from scheduler.registry import build_registry
from stores.detector_store import DETECTOR_STATE_TTL_S
from stores.health_store import text
from stores.keys import Keys
from stores.protocols import StateStore
from stores.redis_state import RedisStateStore

Operation = Callable[[redis.Redis, Keys, str, float], OpOutcome]


def _scan(
    client: redis.Redis,
    pattern: str,
    cursor: str,
    deadline_ts: float,
    step: Callable[[list[Any]], dict[str, int]],
) -> OpOutcome:
    """SCAN ``pattern`` from ``cursor``, applying ``step`` per chunk, until done or the deadline."""
    pos = int(cursor or 0)
    totals: dict[str, int] = {}
    while True:
        pos, found = client.scan(pos, match=pattern, count=defaults.MAINTENANCE_SCAN_COUNT)
        for name, n in step(list(found)).items():
            totals[name] = totals.get(name, 0) + n
        if pos == 0:
            return OpOutcome(True, "", totals)
        if time.time() >= deadline_ts:
            return OpOutcome(False, str(pos), totals)


#: KEYS[1] the detector-write count, KEYS[2..] states the scan found silent, ARGV[1] the
#: silence in seconds. Silence is checked again here: a commit between the scan's look and
#: the drop made the state live again. A drop counts as a detector-state write, as a
#: screening commit does, so a screening that loaded the state before sees it gone and
#: screens again from a fresh state instead of writing the stale baseline back.
_DROP_SILENT = """
local dropped = 0
for i = 2, #KEYS do
  local idle = redis.call('OBJECT', 'IDLETIME', KEYS[i])
  if idle and idle >= tonumber(ARGV[1]) then
    redis.call('UNLINK', KEYS[i])
    dropped = dropped + 1
  end
end
if dropped > 0 then redis.call('INCR', KEYS[1]) end
return dropped
"""


def compact_detector_state(
    client: redis.Redis, keys: Keys, cursor: str, deadline_ts: float
) -> OpOutcome:
    """Drop detector state of devices silent for ``SILENT_DEVICE_S``; give TTL-less state one.

    Silence is read from Redis's own idle clock (OBJECT IDLETIME): screening
    reads and rewrites a device's state with every batch that holds it.
    """
    drop_silent = client.register_script(_DROP_SILENT)

    def step(found: list[Any]) -> dict[str, int]:
        if not found:
            return {}
        pipe: Any = client.pipeline(transaction=False)
        for key in found:
            pipe.object("idletime", key)
            pipe.ttl(key)
        replies = pipe.execute()
        stale = [
            k
            for k, idle in zip(found, replies[0::2], strict=True)
            if (idle or 0) >= defaults.SILENT_DEVICE_S
        ]
        forever = [
            k for k, ttl in zip(found, replies[1::2], strict=True) if ttl == -1 and k not in stale
        ]
        dropped = 0
        if stale:
            args = [defaults.SILENT_DEVICE_S]
            dropped = int(drop_silent(keys=[keys.detector_writes, *stale], args=args))
        if forever:
            pipe = client.pipeline(transaction=False)
            for key in forever:
                pipe.expire(key, DETECTOR_STATE_TTL_S)
            pipe.execute()
        return {"examined": len(found), "dropped": dropped, "ttl_set": len(forever)}

    return _scan(client, keys.detector_state_pattern(), cursor, deadline_ts, step)


def expire_rollups(client: redis.Redis, keys: Keys, cursor: str, deadline_ts: float) -> OpOutcome:
    """Delete rollup minutes older than their retention; give TTL-less ones the retention TTL."""
    oldest_minute_ts = time.time() - defaults.ROLLUP_TTL_S

    def step(found: list[Any]) -> dict[str, int]:
        old: list[Any] = []
        keep: list[Any] = []
        for key in found:
            minute = keys.rollup_minute_ts(text(key))
            if minute is None:
                continue
            (old if minute < oldest_minute_ts else keep).append(key)
        pipe: Any = client.pipeline(transaction=False)
        if old:
            pipe.unlink(*old)
        for key in keep:
            pipe.ttl(key)
        replies = pipe.execute()[1 if old else 0 :]
        forever = [k for k, ttl in zip(keep, replies, strict=True) if ttl == -1]
        if forever:
            pipe = client.pipeline(transaction=False)
            for key in forever:
                pipe.expire(key, defaults.ROLLUP_TTL_S)
            pipe.execute()
        return {"examined": len(found), "deleted": len(old), "ttl_set": len(forever)}

    return _scan(client, keys.rollup_family_pattern(), cursor, deadline_ts, step)


def trim_streams(client: redis.Redis, keys: Keys, cursor: str, deadline_ts: float) -> OpOutcome:
    """XTRIM the dead-letter stream to its configured length and alerts to length and age."""
    min_id = f"{int((time.time() - defaults.ALERT_RETENTION_S) * 1000)}-0"
    pipe: Any = client.pipeline(transaction=False)
    pipe.xtrim(keys.dead_letters, maxlen=defaults.DEAD_LETTER_MAXLEN, approximate=False)
    pipe.xtrim(keys.alerts, maxlen=defaults.ALERT_STREAM_MAXLEN, approximate=False)
    pipe.xtrim(keys.alerts, minid=min_id, approximate=False)
    dead, by_len, by_age = pipe.execute()
    return OpOutcome(True, "", {"dead_letters": dead, "alerts": by_len + by_age})


def rebuild_registry(client: redis.Redis, keys: Keys, cursor: str, deadline_ts: float) -> OpOutcome:
    """Re-validate the stored registry snapshot and rewrite it if it is not in canonical form.

    Fails (and is retried, then rebooked) when no snapshot is stored: there is
    nothing to rebuild from, which an operator must hear about.
    """
    return rebuild_registry_of(RedisStateStore(client, keys))


def rebuild_registry_of(store: StateStore) -> OpOutcome:
    """``rebuild_registry`` on any state store (the in-memory one too)."""
    current = store.load_registry()
    if current is None:
        raise ConfigError("no device registry stored to rebuild; load one first")
    rebuilt = build_registry(
        current.topology,
        current.device_id,
        current.tier,
        current.home_region,
        current.group,
        current.allowed_mask,
        current.lat_deg,
        current.lon_deg,
    )
    same = all(
        np.array_equal(getattr(current, c), getattr(rebuilt, c))
        for c in ("device_id", "tier", "home_region", "group", "allowed_mask")
    )
    if not same:
        store.save_registry(rebuilt)
    return OpOutcome(True, "", {"devices": len(rebuilt), "rewritten": int(not same)})


OPERATIONS: dict[str, Operation] = {
    "compact_detector_state": compact_detector_state,
    "expire_rollups": expire_rollups,
    "trim_streams": trim_streams,
    "rebuild_registry": rebuild_registry,
}


def operation(name: str) -> Operation:
    try:
        return OPERATIONS[name]
    except KeyError:
        raise ConfigError(
            f"unknown maintenance operation {name!r}; known: {sorted(OPERATIONS)}"
        ) from None


class RedisMaintenanceOps:
    """``MaintenanceOps`` on the deployment's Redis."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys

    def run(self, name: str, cursor: str, deadline_ts: float) -> OpOutcome:
        return operation(name)(self.client, self.keys, cursor, deadline_ts)
