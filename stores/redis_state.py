"""Redis implementation of the state store.

A batch's effects (claim, rollups, latency histograms, counters) are applied in
one MULTI/EXEC under a WATCH of the claim (``stores.claims``), packed from arrays
(``stores.resp``): atomic, and a no-op when the batch id was already claimed — which
is what makes redelivery after a crash harmless.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import redis

from scheduler import defaults
from scheduler.model import DeadLetter, Topology, readings_by_reason
from scheduler.registry import Registry
from scheduler.rollup import (
    Rollup,
    RollupDelta,
    decode_rows,
    delta_rows,
    merge_rows,
    row_bytes,
    row_to_rollup,
)
from stores import resp
from stores.claims import apply_once
from stores.keys import Keys


def writer_id() -> str:
    """This process's rollup writer id; a forked child gets its own."""
    return f"{socket.gethostname()}-{os.getpid()}"


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
        # redis-py annotates replies as unions of bytes/str/awaitables; with
        # decode_responses off they are bytes, so the client is used untyped.
        self.client: Any = client
        self.keys = keys or Keys()
        self.claim_ttl_s = claim_ttl_s
        self.rollup_ttl_s = rollup_ttl_s
        self.dead_letter_maxlen = dead_letter_maxlen
        self.writer = writer_id()

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
        """Merge the batch's rollups into this writer's hashes and count it, atomically.

        Round trips: WATCH+EXISTS on the claim, one with an HMGET per minute touched
        (usually one or two), then one MULTI/EXEC with every write. If another
        delivery claimed the batch meanwhile, EXEC aborts and nothing is applied.
        """
        k = self.keys
        cmd = resp.command

        def prepare(session: resp.Session) -> list[resp.Command]:
            minutes = np.unique(delta.minute_ts).tolist()
            picks = [np.flatnonzero(delta.minute_ts == minute) for minute in minutes]
            keys = [k.rollup(minute, self.writer).encode() for minute in minutes]
            stored = session.run(
                [
                    [
                        resp.command_head(b"HMGET", 1 + sel.size),
                        resp.bulk(key),
                        resp.id_bulks(b"", delta.device_id[sel]),
                    ]
                    for key, sel in zip(keys, picks, strict=True)
                ]
            )
            writes: list[resp.Command] = []
            for minute, key, sel, blobs in zip(minutes, keys, picks, stored, strict=True):
                rows = merge_rows(decode_rows(blobs, delta.sum.shape[1]), delta_rows(delta, sel))
                fields = resp.id_bulks(b"", delta.device_id[sel], row_bytes(rows))
                writes += [
                    [resp.command_head(b"HSET", 1 + 2 * sel.size), resp.bulk(key), fields],
                    cmd(b"EXPIRE", key, self.rollup_ttl_s),
                    cmd(b"SADD", k.rollup_writers(minute), self.writer),
                    cmd(b"EXPIRE", k.rollup_writers(minute), self.rollup_ttl_s),
                ]
            for kind, hist in latency.items():
                for bucket, count in hist.items():
                    writes.append(cmd(b"HINCRBY", k.latency(kind, tier), bucket, count))
            writes.append(cmd(b"HINCRBY", k.counters, f"processed:{tier}", readings))
            writes.append(cmd(b"HINCRBY", k.counters, f"batches:{tier}", 1))
            return writes

        return apply_once(
            self.client,
            k.claim(batch_id),
            self.claim_ttl_s,
            k.counters,
            "duplicate_deliveries",
            prepare,
        )

    def rollup(self, device_id: int, minute_ts: int, n_metrics: int) -> Rollup | None:
        writers = self.client.smembers(self.keys.rollup_writers(minute_ts))
        if not writers:
            return None
        pipe = self.client.pipeline(transaction=False)
        for w in sorted(writers):
            pipe.hget(self.keys.rollup(minute_ts, w.decode()), device_id)
        rows = decode_rows(pipe.execute(), n_metrics)
        merged = rows[0]
        for row in rows[1:]:
            merged = merge_rows(merged[None, :], row[None, :])[0]
        if merged[0] == 0:
            return None
        return row_to_rollup(merged, n_metrics)

    def rollup_count_total(self) -> int:
        total = 0
        for key in self.client.scan_iter(match=self.keys.rollup_pattern(), count=1_000):
            blobs = self.client.hvals(key)
            if blobs:
                first = np.frombuffer(b"".join(blobs), dtype="<f8")
                width = len(blobs[0]) // 8
                total += int(first.reshape(-1, width)[:, 0].sum())
        return total

    def add_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        if not letters:
            return
        pipe = self.client.pipeline(transaction=False)
        queue_dead_letters(pipe, self.keys, letters, self.dead_letter_maxlen)
        pipe.execute()

    def dead_letter_claimed(self, claimed: Sequence[tuple[str, DeadLetter]]) -> list[bool]:
        """Claims, stream entries and counters in one MULTI/EXEC WATCHing the claims
        (retried when a claim moves under the WATCH)."""
        claim_keys = [self.keys.claim(cid) for cid, _ in claimed]
        if not claim_keys:
            return []
        while True:
            pipe: Any
            with self.client.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(*claim_keys)
                    free = [not pipe.exists(k) for k in claim_keys]
                    pipe.multi()
                    written = []
                    for key, (_, dl), ok in zip(claim_keys, claimed, free, strict=True):
                        if ok:
                            pipe.set(key, "dead_lettered", ex=int(self.claim_ttl_s))
                            written.append(dl)
                    if written:
                        queue_dead_letters(pipe, self.keys, written, self.dead_letter_maxlen)
                    pipe.execute()
                    return free
                except redis.WatchError:
                    continue

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
        # Packed: tasks record their service time here after every batch. Retried on a
        # lost connection, as redis-py's pipeline did.
        increments = [
            resp.command(b"HINCRBY", self.keys.counters, name, n) for name, n in counts.items() if n
        ]
        if increments:
            with resp.Session(self.client) as session:
                session.run(increments, retry=True)

    def counters(self) -> dict[str, int]:
        return {k.decode(): int(v) for k, v in self.client.hgetall(self.keys.counters).items()}

    def latency_histogram(self, kind: str, tier: str) -> dict[int, int]:
        raw = self.client.hgetall(self.keys.latency(kind, tier))
        return {int(k): int(v) for k, v in raw.items()}

    def save_registry(self, registry: Registry) -> int:
        columns: dict[str, Any] = {
            "topology": json.dumps(
                {"tiers": registry.topology.tiers, "regions": registry.topology.regions}
            ),
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
        version_key = self.keys.registry_version

        # The version and the columns change in one transaction: a worker that finds the
        # version moved (RegistryChanged) and reloads must not read the old columns.
        def replace(pipe: Any) -> int:
            version = int(pipe.get(version_key) or 0) + 1
            pipe.multi()
            pipe.set(version_key, version)
            pipe.hset(self.keys.registry, mapping={**columns, "version": version})
            return version

        return int(self.client.transaction(replace, version_key, value_from_callable=True))

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
        return Registry(topology=topo, version=int(raw[b"version"]), **cols)  # type: ignore[arg-type]

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


def queue_dead_letters(pipe: Any, keys: Keys, letters: Sequence[DeadLetter], maxlen: int) -> None:
    """Queue on ``pipe`` one stream entry per letter and the ``dead_lettered`` counters
    (total and per reason): the one layout every writer of the stream uses."""
    for dl in letters:
        pipe.xadd(
            keys.dead_letters,
            {
                "reason": dl.reason,
                "detail": dl.detail,
                "payload": dl.payload,
                "source": dl.source,
                "at_ts": repr(dl.at_ts),
                "readings": dl.readings,
            },
            maxlen=maxlen,
            approximate=True,
        )
    pipe.hincrby(keys.counters, "dead_lettered", sum(dl.readings for dl in letters))
    for reason, readings in readings_by_reason(letters).items():
        pipe.hincrby(keys.counters, f"dead_lettered:{reason}", readings)
