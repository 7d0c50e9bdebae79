"""Per-device detector state between batches: in Redis, or in memory for the embedded run.

A screening task makes three round trips per batch: ``load`` (one MGET of the batch's
screen claim and every device's state) and ``commit`` (WATCH the claim, then one
MULTI/EXEC that claims the batch id, writes every state with one MSET and adds the
counts and detection latency histograms, atomically: ``stores.claims``). Both go out
packed from arrays (``stores.resp``). A batch whose claim exists is not screened again,
so a redelivery neither advances a device's state twice nor emits its alerts twice.

Two batches holding the same device, screened at the same moment by two workers, both
read the old state and the later commit wins: one batch's step for that device is lost.
Batches of one (region, tier) queue are mostly taken in order, and one lost step only
delays learning; the price of locking every device on every batch is not worth it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import redis

from scheduler import defaults
from scheduler.detector_state import pack_state_rows, pack_states, unpack_states
from scheduler.latency import merge_counts
from stores import resp
from stores.claims import apply_once
from stores.keys import Keys

U64 = npt.NDArray[np.uint64]
F64 = npt.NDArray[np.float64]

#: Maintenance compaction drops the state of a device silent this long, so it starts
#: afresh (warm-up again) rather than from a stale baseline.
DETECTOR_STATE_TTL_S = 2 * 24 * 3600

#: Batches with alerts kept in the recent-alerts log; alerts are rare, so this is hours.
RECENT_ALERT_BATCHES = 100_000

ALERT_STAGE = "alert"

#: (region, tier name of the screening stream, newest event ts in the batch).
Frontier = tuple[str, str, float]
NOTIFY_STAGE = "notify"


class DetectorStore(Protocol):
    def load(self, batch_id: str, device_ids: U64, metrics: int) -> F64 | None:
        """State rows for ``device_ids`` (fresh where unknown); None if the batch was screened."""

    def commit(
        self,
        batch_id: str,
        device_ids: U64,
        states: F64,
        latency: Mapping[int, int],
        readings: int,
        alerts: int,
        alert_record: bytes = b"",
        frontier: Frontier | None = None,
        latency_stages: tuple[str, ...] = (),
    ) -> bool:
        """Claim the batch and store its states, alert latency and counts at once.

        ``alert_record`` (``scheduler.alert_record``) joins the capped recent-alerts log;
        ``frontier`` (region, tier, newest event ts) advances that screening stream's
        frontier (``scheduler.silence_clock``), never moving it back; ``latency_stages``
        are histograms that count ``latency`` too, besides the "alert" stage.
        False (and nothing stored) when the batch was claimed before.
        """

    def frontier(self, region: str) -> dict[str, float]:
        """Per screening stream (tier name) of ``region``, the newest event ts screened."""

    def recent_alerts(self) -> list[bytes]:
        """The recent-alerts log, newest batch first (at most ``RECENT_ALERT_BATCHES``)."""

    def add_latency(self, stage: str, latency: Mapping[int, int]) -> None:
        """Add bucket counts to a detection latency histogram (e.g. the "notify" stage)."""

    def detection_histogram(self, stage: str = ALERT_STAGE) -> dict[int, int]: ...

    def screen_counters(self) -> dict[str, int]:
        """``screened_readings``, ``device_alerts`` and ``screen_duplicates`` so far."""


COUNTER_NAMES = ("screened_readings", "device_alerts", "screen_duplicates")


class RedisDetectorStore:
    """States as raw float64 blobs under ``Keys.detector_state``; shareable between processes."""

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys | None = None,
        claim_ttl_s: int = defaults.BATCH_CLAIM_TTL_S,
    ) -> None:
        self.client: Any = client  # redis-py's reply unions: see RedisStateStore
        self.keys = keys or Keys()
        self.claim_ttl_s = claim_ttl_s

    def load(self, batch_id: str, device_ids: U64, metrics: int) -> F64 | None:
        k = self.keys
        mget = [
            resp.command_head(b"MGET", 1 + device_ids.size),
            resp.bulk(k.screen_claim(batch_id).encode()),
            resp.id_bulks(k.detector_state_head, device_ids),
        ]
        with resp.Session(self.client) as session:
            (blobs,) = session.run([mget], retry=True)
        if blobs[0] is not None:
            return None
        return unpack_states(blobs[1:], metrics)

    def commit(
        self,
        batch_id: str,
        device_ids: U64,
        states: F64,
        latency: Mapping[int, int],
        readings: int,
        alerts: int,
        alert_record: bytes = b"",
        frontier: Frontier | None = None,
        latency_stages: tuple[str, ...] = (),
    ) -> bool:
        """Claim the batch and write every state in one MULTI/EXEC.

        States are bounded by the fleet (one per device), so they carry no TTL;
        the maintenance compaction drops those of devices silent for long. A
        native MSET costs Redis far less than a SET EX per device in Lua.
        """
        k = self.keys
        writes: list[resp.Command] = []
        if device_ids.size:
            rows = pack_state_rows(states)
            mset = resp.command_head(b"MSET", 2 * device_ids.size)
            writes.append([mset, resp.id_bulks(k.detector_state_head, device_ids, rows)])
        cmd = resp.command
        writes += [
            cmd(b"HINCRBY", k.counters, "screened_readings", readings),
            cmd(b"HINCRBY", k.counters, "device_alerts", alerts),
            *(
                cmd(b"HINCRBY", k.detection_latency(stage), bucket, count)
                for stage in (ALERT_STAGE, *latency_stages)
                for bucket, count in latency.items()
            ),
        ]
        if alert_record:
            writes.append(cmd(b"LPUSH", k.recent_device_alerts, alert_record))
            writes.append(cmd(b"LTRIM", k.recent_device_alerts, 0, RECENT_ALERT_BATCHES - 1))
        if frontier is not None:
            region, tier, newest_ts = frontier
            writes.append(cmd(b"ZADD", k.screened_frontier(region), b"GT", newest_ts, tier))
        return apply_once(
            self.client,
            k.screen_claim(batch_id),
            self.claim_ttl_s,
            k.counters,
            "screen_duplicates",
            lambda _session: writes,
        )

    def frontier(self, region: str) -> dict[str, float]:
        rows: Any = self.client.zrange(self.keys.screened_frontier(region), 0, -1, withscores=True)
        return {(t.decode() if isinstance(t, bytes) else str(t)): float(ts) for t, ts in rows}

    def add_latency(self, stage: str, latency: Mapping[int, int]) -> None:
        if not latency:
            return
        pipe = self.client.pipeline(transaction=False)
        for bucket, count in latency.items():
            pipe.hincrby(self.keys.detection_latency(stage), str(bucket), count)
        pipe.execute()

    def detection_histogram(self, stage: str = ALERT_STAGE) -> dict[int, int]:
        return detection_histogram(self.client, self.keys, stage)

    def recent_alerts(self) -> list[bytes]:
        raw: Any = self.client.lrange(self.keys.recent_device_alerts, 0, -1)
        return [bytes(blob) for blob in raw]

    def screen_counters(self) -> dict[str, int]:
        raw: Any = self.client.hmget(self.keys.counters, list(COUNTER_NAMES))
        return {name: int(v or 0) for name, v in zip(COUNTER_NAMES, raw, strict=True)}


class MemoryDetectorStore:
    """The in-memory twin; one lock makes ``commit`` atomic like the Lua script."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._claims: set[str] = set()
        self._states: dict[int, bytes] = {}
        self._latency: dict[str, dict[int, int]] = {}
        self._counters = dict.fromkeys(COUNTER_NAMES, 0)
        self._recent: list[bytes] = []
        #: device → monotonic time its state was last written (Redis's OBJECT IDLETIME).
        self._touched: dict[int, float] = {}
        self._frontier: dict[str, dict[str, float]] = {}

    def load(self, batch_id: str, device_ids: U64, metrics: int) -> F64 | None:
        with self._lock:
            if batch_id in self._claims:
                return None
            blobs: list[bytes | None] = [self._states.get(d) for d in device_ids.tolist()]
        return unpack_states(blobs, metrics)

    def commit(
        self,
        batch_id: str,
        device_ids: U64,
        states: F64,
        latency: Mapping[int, int],
        readings: int,
        alerts: int,
        alert_record: bytes = b"",
        frontier: Frontier | None = None,
        latency_stages: tuple[str, ...] = (),
    ) -> bool:
        blobs = pack_states(states)
        with self._lock:
            if batch_id in self._claims:
                self._counters["screen_duplicates"] += 1
                return False
            self._claims.add(batch_id)
            self._counters["screened_readings"] += readings
            self._counters["device_alerts"] += alerts
            self._states.update(zip(device_ids.tolist(), blobs, strict=True))
            self._touched.update(dict.fromkeys(device_ids.tolist(), time.monotonic()))
            for stage in (ALERT_STAGE, *latency_stages):
                self._merge(stage, latency)
            if alert_record:
                self._recent.insert(0, alert_record)
                del self._recent[RECENT_ALERT_BATCHES:]
            if frontier is not None:
                region, tier, newest_ts = frontier
                streams = self._frontier.setdefault(region, {})
                streams[tier] = max(streams.get(tier, newest_ts), newest_ts)
            return True

    def frontier(self, region: str) -> dict[str, float]:
        with self._lock:
            return dict(self._frontier.get(region, {}))

    def recent_alerts(self) -> list[bytes]:
        with self._lock:
            return list(self._recent)

    def drop_idle(self, idle_s: float) -> tuple[int, int]:
        """Forget the state of devices not screened for ``idle_s``: (examined, dropped)."""
        now = time.monotonic()
        with self._lock:
            stale = [d for d in self._states if now - self._touched.get(d, now) >= idle_s]
            for d in stale:
                del self._states[d]
                self._touched.pop(d, None)
            return len(self._states) + len(stale), len(stale)

    def state_page(self, start: int, count: int) -> tuple[list[int], list[bytes], int]:
        """States in device id order from position ``start``: (ids, blobs, next start; 0
        once the pass is over). For the dropout sweep, like SCAN over the Redis keys."""
        with self._lock:
            ids = sorted(self._states)[start : start + count]
            blobs = [self._states[d] for d in ids]
            end = start + count
            return ids, blobs, end if end < len(self._states) else 0

    def replace_states(
        self, device_ids: list[int], seen: list[bytes], new: list[bytes]
    ) -> list[bool]:
        """Write ``new`` where the state is still ``seen`` (no commit came in between)."""
        with self._lock:
            same = [self._states.get(d) == s for d, s in zip(device_ids, seen, strict=True)]
            for d, blob, ok in zip(device_ids, new, same, strict=True):
                if ok:
                    self._states[d] = blob
            return same

    def add_latency(self, stage: str, latency: Mapping[int, int]) -> None:
        with self._lock:
            self._merge(stage, latency)

    def _merge(self, stage: str, latency: Mapping[int, int]) -> None:
        self._latency[stage] = merge_counts(self._latency.get(stage, {}), latency)

    def detection_histogram(self, stage: str = ALERT_STAGE) -> dict[int, int]:
        with self._lock:
            return dict(self._latency.get(stage, {}))

    def screen_counters(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counters)


def detection_histogram(
    client: redis.Redis, keys: Keys, stage: str = ALERT_STAGE
) -> dict[int, int]:
    """Detection latency bucket counts (``scheduler.latency``) for a run's key prefix.

    ``percentile_ms(detection_histogram(client, keys), 99)`` is the p99 from the event
    time of an anomalous reading to its device alert being emitted by screening.
    """
    raw: Any = client.hgetall(keys.detection_latency(stage))
    return {int(b): int(c) for b, c in raw.items()}
