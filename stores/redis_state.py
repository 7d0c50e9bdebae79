"""Redis implementation of the state store.

A batch's effects (claim, rollups, latency histograms, counters) are applied by
one Lua script: one round trip, atomic, and a no-op when the batch id was
already claimed — which is what makes redelivery after a crash harmless.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import redis

from scheduler import defaults
from scheduler.model import DeadLetter, Topology
from scheduler.registry import Registry
from scheduler.rollup import Rollup, RollupDelta
from stores.keys import Keys

_APPLY_BATCH = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  redis.call('HINCRBY', KEYS[2], 'duplicate_deliveries', 1)
  return 0
end
local ttl = tonumber(ARGV[2])
local m = tonumber(ARGV[5])
local a = 8
for _ = 1, tonumber(ARGV[6]) do
  redis.call('HINCRBY', KEYS[3], ARGV[a], ARGV[a + 1]); a = a + 2
end
for _ = 1, tonumber(ARGV[7]) do
  redis.call('HINCRBY', KEYS[4], ARGV[a], ARGV[a + 1]); a = a + 2
end
redis.call('HINCRBY', KEYS[2], 'processed:' .. ARGV[4], ARGV[3])
redis.call('HINCRBY', KEYS[2], 'batches:' .. ARGV[4], 1)
local fields = {'n', 'lt'}
for j = 1, m do
  fields[#fields + 1] = 's' .. j; fields[#fields + 1] = 'mn' .. j
  fields[#fields + 1] = 'mx' .. j; fields[#fields + 1] = 'l' .. j
end
local stride = #fields
local fmt = '%.17g'
for k = 5, #KEYS do
  local key = KEYS[k]
  local cur = redis.call('HMGET', key, unpack(fields))
  local kv = {}
  if not cur[1] then
    for f = 1, stride do
      kv[#kv + 1] = fields[f]; kv[#kv + 1] = ARGV[a + f - 1]
    end
    redis.call('HSET', key, unpack(kv))
    redis.call('EXPIRE', key, ttl)
  else
    local newer = tonumber(ARGV[a + 1]) >= tonumber(cur[2])
    kv = {'n', tonumber(cur[1]) + tonumber(ARGV[a])}
    kv[3] = 'lt'; kv[4] = newer and ARGV[a + 1] or cur[2]
    for j = 0, m - 1 do
      local o = 3 + 4 * j
      kv[#kv + 1] = fields[o]
      kv[#kv + 1] = string.format(fmt, tonumber(cur[o]) + tonumber(ARGV[a + o - 1]))
      kv[#kv + 1] = fields[o + 1]
      kv[#kv + 1] = string.format(fmt, math.min(tonumber(cur[o + 1]), tonumber(ARGV[a + o])))
      kv[#kv + 1] = fields[o + 2]
      kv[#kv + 1] = string.format(fmt, math.max(tonumber(cur[o + 2]), tonumber(ARGV[a + o + 1])))
      kv[#kv + 1] = fields[o + 3]
      kv[#kv + 1] = newer and ARGV[a + o + 2] or cur[o + 3]
    end
    redis.call('HSET', key, unpack(kv))
  end
  a = a + stride
end
return 1
"""


def _hist_args(hist: Mapping[int, int]) -> list[int]:
    out: list[int] = []
    for bucket, count in hist.items():
        out += (bucket, count)
    return out


class RedisStateStore:
    """State in Redis under ``keys.prefix``; safe to share between processes."""

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys | None = None,
        claim_ttl_s: int = defaults.BATCH_CLAIM_TTL_S,
        rollup_ttl_s: int = defaults.ROLLUP_TTL_S,
        dead_letter_maxlen: int = defaults.DEAD_LETTER_MAXLEN,
    ) -> None:
        self.client = client
        self.keys = keys or Keys()
        self.claim_ttl_s = claim_ttl_s
        self.rollup_ttl_s = rollup_ttl_s
        self.dead_letter_maxlen = dead_letter_maxlen
        self._apply = client.register_script(_APPLY_BATCH)

    @classmethod
    def from_url(cls, url: str, keys: Keys | None = None) -> RedisStateStore:
        return cls(redis.Redis.from_url(url), keys)

    def apply_batch(
        self,
        batch_id: str,
        tier: str,
        delta: RollupDelta,
        latency: Mapping[str, Mapping[int, int]],
        readings: int,
    ) -> bool:
        k = self.keys
        dev = delta.device_id.tolist()
        mnt = delta.minute_ts.tolist()
        rollup_keys = [k.rollup(m, d) for m, d in zip(mnt, dev, strict=True)]
        m = delta.sum.shape[1]
        # Columns interleaved per row: n, lt, then (sum, min, max, last) per metric.
        cols = np.empty((len(delta), 2 + 4 * m), dtype=object)
        cols[:, 0] = delta.count.tolist()
        cols[:, 1] = list(map(repr, delta.last_ts.tolist()))
        for j in range(m):
            for off, arr in enumerate((delta.sum, delta.min, delta.max, delta.last)):
                cols[:, 2 + 4 * j + off] = list(map(repr, arr[:, j].tolist()))
        h_ingest = _hist_args(latency.get("ingest", {}))
        h_event = _hist_args(latency.get("event", {}))
        args: list[Any] = [
            self.claim_ttl_s,
            self.rollup_ttl_s,
            readings,
            tier,
            m,
            len(h_ingest) // 2,
            len(h_event) // 2,
            *h_ingest,
            *h_event,
            *cols.ravel().tolist(),
        ]
        keys = [
            k.claim(batch_id),
            k.counters,
            k.latency("ingest", tier),
            k.latency("event", tier),
            *rollup_keys,
        ]
        return bool(self._apply(keys=keys, args=args))

    def rollup(self, device_id: int, minute_ts: int, n_metrics: int) -> Rollup | None:
        raw = self.client.hgetall(self.keys.rollup(minute_ts, device_id))
        if not raw:
            return None
        f = {key.decode(): float(v) for key, v in raw.items()}
        idx = range(1, n_metrics + 1)
        return Rollup(
            count=int(f["n"]),
            last_ts=f["lt"],
            sum=tuple(f[f"s{j}"] for j in idx),
            min=tuple(f[f"mn{j}"] for j in idx),
            max=tuple(f[f"mx{j}"] for j in idx),
            last=tuple(f[f"l{j}"] for j in idx),
        )

    def rollup_count_total(self) -> int:
        total = 0
        batch: list[bytes] = []
        for key in self.client.scan_iter(match=self.keys.rollup_pattern(), count=10_000):
            batch.append(key)
            if len(batch) >= 10_000:
                total += self._sum_counts(batch)
                batch = []
        return total + self._sum_counts(batch)

    def _sum_counts(self, keys: list[bytes]) -> int:
        if not keys:
            return 0
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.hget(key, "n")
        return sum(int(v) for v in pipe.execute() if v is not None)

    def add_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        if not letters:
            return
        pipe = self.client.pipeline(transaction=False)
        for dl in letters:
            pipe.xadd(
                self.keys.dead_letters,
                {
                    "reason": dl.reason,
                    "detail": dl.detail,
                    "payload": dl.payload,
                    "source": dl.source,
                    "at_ts": repr(dl.at_ts),
                    "readings": dl.readings,
                },
                maxlen=self.dead_letter_maxlen,
                approximate=True,
            )
        pipe.hincrby(self.keys.counters, "dead_lettered", sum(dl.readings for dl in letters))
        pipe.execute()

    def dead_letters(self, count: int = 100) -> list[DeadLetter]:
        entries = self.client.xrevrange(self.keys.dead_letters, count=count)
        return [
            DeadLetter(
                reason=f[b"reason"].decode(),
                detail=f[b"detail"].decode(),
                payload=f[b"payload"],
                source=f[b"source"].decode(),
                at_ts=float(f[b"at_ts"]),
                readings=int(f.get(b"readings", 1)),
            )
            for _id, f in reversed(entries)
        ]

    def incr_counters(self, counts: Mapping[str, int]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for name, n in counts.items():
            if n:
                pipe.hincrby(self.keys.counters, name, n)
        pipe.execute()

    def counters(self) -> dict[str, int]:
        return {k.decode(): int(v) for k, v in self.client.hgetall(self.keys.counters).items()}

    def latency_histogram(self, kind: str, tier: str) -> dict[int, int]:
        raw = self.client.hgetall(self.keys.latency(kind, tier))
        return {int(k): int(v) for k, v in raw.items()}

    def save_registry(self, registry: Registry) -> int:
        version = int(self.client.incr(self.keys.registry_version))
        columns = {
            "topology": json.dumps(
                {"tiers": registry.topology.tiers, "regions": registry.topology.regions}
            ),
            "version": version,
            "saved_ts": time.time(),
        }
        for name in (
            "device_id",
            "tier",
            "home_region",
            "group",
            "allowed_mask",
            "lat_deg",
            "lon_deg",
        ):
            columns[name] = getattr(registry, name).tobytes()
        self.client.hset(self.keys.registry, mapping=columns)  # type: ignore[arg-type]
        return version

    def registry_version(self) -> int:
        v = self.client.get(self.keys.registry_version)
        return int(v) if v is not None else 0

    def load_registry(self) -> Registry | None:
        raw = self.client.hgetall(self.keys.registry)
        if not raw:
            return None
        stored = json.loads(raw[b"topology"])
        topo = Topology(tiers=tuple(stored["tiers"]), regions=tuple(stored["regions"]))
        cols = {
            name: np.frombuffer(raw[name.encode()], dtype=dtype)
            for name, dtype in (
                ("device_id", np.uint64),
                ("tier", np.uint8),
                ("home_region", np.uint8),
                ("group", np.uint32),
                ("allowed_mask", np.uint16),
                ("lat_deg", np.float32),
                ("lon_deg", np.float32),
            )
        }
        return Registry(topology=topo, version=int(raw[b"version"]), **cols)

    def delete_all(self) -> int:
        """Remove every key under this store's prefix (broker keys included); returns the count."""
        removed = 0
        batch: list[bytes] = []
        for key in self.client.scan_iter(match=self.keys.owned_pattern(), count=10_000):
            batch.append(key)
            if len(batch) >= 10_000:
                removed += int(self.client.unlink(*batch))
                batch = []
        if batch:
            removed += int(self.client.unlink(*batch))
        return removed
