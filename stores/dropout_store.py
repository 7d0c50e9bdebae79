"""Detector states read page by page for the dropout sweep, and its marks written back.

A silent device sends nothing, so no screening task ever looks at its state: the
sweep (``tasks.dropout``) walks every state with SCAN, a bounded page at a time.
Each region keeps its own SCAN cursor in Redis, so successive sweeps (on any worker)
continue where the last one stopped and a full pass over a million states is spread
over many short tasks. SCAN may return a key twice within a pass; the marks in the
state (``find_dropouts``) make a second look harmless.

``mark`` writes back only the states the sweep marked, and only if nobody changed
them since the page was read (read again under a WATCH of the detector-write count,
then one MULTI/MSET that counts itself there too): a screening commit of the same
device in between wins, and the device is looked at again on the next pass; a
screening that loaded a state before its mark was written screens again from it.

Devices whose silence was folded into an event are remembered per region (``fold``),
so that one still silent after its peers came back is alerted on its own: ``folded``
each page carries, per device, the silence it was remembered for and when its peers
were first seen back (``arm``), in the same round trip; ``forget`` drops those settled.

A remembered device is settled only when a page finds it, so one that left the fleet or
the region would be remembered for ever. Each pass is numbered: the sweep notes the pass
that found a remembered device (``keep``; ``fold`` for a new one), and ``end_pass``
forgets those neither the pass now ending nor the one before found (SCAN returns every
state that existed throughout a pass). Memory follows the fleet: at most two passes
behind it. Devices still there are settled by their own rules, their silence counting
as quiet together for ``FoldConfig.together_s`` at most.

"A pass did not find it" holds only if one sweep at a time walks the region's cursor:
two sweeps paging it together (two pool processes or replicas taking sweeps sent 2 s
apart, or a retry beside the next one) end passes the other has not recorded yet, write
back stale cursors, and number one page a pass. So a sweep runs only while it holds the
region's lease (``claim_sweep``, released by ``release_sweep``; it lapses after the hold
the sweep asked for, ``tasks.dropout.LEASE_MS``, if its worker dies). The pass of slack in
``end_pass`` covers a sweep that outlived its lease.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import redis

from stores import resp
from stores.detector_store import MemoryDetectorStore, RedisDetectorStore, registry_moved
from stores.keys import Keys

U64 = npt.NDArray[np.uint64]
F64 = npt.NDArray[np.float64]
BOOL = npt.NDArray[np.bool_]

#: Tries of a page's marks while other writers' commits keep moving the write count.
MARK_PASSES = 3


@dataclass
class StatePage:
    """One page of detector states: device ids and their blobs as stored."""

    device_ids: U64
    blobs: list[bytes]
    #: True when this page finished a full pass (the cursor went back to 0).
    wrapped: bool
    #: Per device, the last reading before a silence folded into an event (``fold``);
    #: NaN for a device not remembered so.
    folded_since_ts: F64 | None = None
    #: Per device, when its peers were first seen back after it (``arm``); NaN if not.
    armed_ts: F64 | None = None
    #: The number of the pass this page belongs to (``keep``, ``end_pass``).
    pass_no: int = 0

    def __post_init__(self) -> None:
        n = self.device_ids.size
        if self.folded_since_ts is None:
            self.folded_since_ts = np.full(n, np.nan)
        if self.armed_ts is None:
            self.armed_ts = np.full(n, np.nan)


class DropoutStore(Protocol):
    def claim_sweep(self, region: str, hold_ms: int) -> str | None:
        """The lease of ``region``'s sweep for ``hold_ms`` at most: a token to release it
        with, or None while another sweep holds it."""

    def release_sweep(self, region: str, token: str) -> None:
        """Give back the lease taken with ``token``; a lease since taken by another stays."""

    def page(self, region: str, page_size: int) -> StatePage:
        """The next page of ``region``'s pass over every detector state, with the pass's
        number (the page that ends a pass moves the number on)."""

    def mark(
        self,
        device_ids: U64,
        seen: list[bytes],
        marked: list[bytes],
        streams: Sequence[str],
        registry_version: int | None = None,
    ) -> BOOL:
        """Replace ``seen`` by ``marked`` where unchanged meanwhile; which were written.

        ``registry_version``: the snapshot ``streams`` came from; nothing is written while
        the stored registry is another version (the sweep looks again next pass)."""

    def frontier(self, region: str) -> dict[str, float]:
        """Per screening stream (tier name) of ``region``, the newest event ts screened."""

    def fold(self, region: str, device_ids: U64, since_ts: F64, pass_no: int) -> None:
        """Remember devices whose silence (since their last reading) folded into an event,
        found in pass ``pass_no``."""

    def arm(self, region: str, device_ids: U64, at_ts: F64) -> None:
        """Their peers were seen back at ``at_ts`` (each; kept if already armed)."""

    def forget(self, region: str, device_ids: U64) -> None:
        """Settled: back, alerted on their own, or gone."""

    def keep(self, region: str, device_ids: U64, pass_no: int) -> None:
        """Remembered devices pass ``pass_no`` found still in the region, unsettled."""

    def end_pass(self, region: str, pass_no: int, now_ts: float) -> int:
        """Pass ``pass_no`` finished (its last page was read): forget remembered devices
        neither it nor the pass before found (gone from the fleet or the region) and event
        spans over for ``_EVENT_SPAN_S`` at ``now_ts``. Returns devices forgotten."""

    def events(self, region: str) -> dict[int, tuple[float, float]]:
        """Per group (``REGION_WIDE``: the region), the span of last readings (first, last)
        of the devices its latest folded silence holds."""

    def note_events(self, region: str, spans: Mapping[int, tuple[float, float]]) -> None:
        """Widen (or start) each group's span by ``spans``; a span older than an hour
        is started afresh, as it belongs to an earlier silence."""


class RedisDropoutStore:
    def __init__(self, client: redis.Redis, keys: Keys | None = None) -> None:
        self.client: Any = client  # redis-py's reply unions: see RedisStateStore
        self.keys = keys or Keys()
        self._release = client.register_script(_RELEASE)

    def frontier(self, region: str) -> dict[str, float]:
        return RedisDetectorStore(self.client, self.keys).frontier(region)

    def fold(self, region: str, device_ids: U64, since_ts: F64, pass_no: int) -> None:
        if device_ids.size:
            mapping = dict(zip(device_ids.tolist(), since_ts.tolist(), strict=True))
            pipe = self.client.pipeline(transaction=False)
            pipe.zadd(self.keys.dropout_folded(region), mapping)
            pipe.zadd(self.keys.dropout_found(region), dict.fromkeys(mapping, pass_no))
            pipe.execute()

    def arm(self, region: str, device_ids: U64, at_ts: F64) -> None:
        if device_ids.size:
            mapping = dict(zip(device_ids.tolist(), at_ts.tolist(), strict=True))
            self.client.zadd(self.keys.dropout_armed(region), mapping, nx=True)

    def forget(self, region: str, device_ids: U64) -> None:
        if device_ids.size:
            members = device_ids.tolist()
            pipe = self.client.pipeline(transaction=False)
            pipe.zrem(self.keys.dropout_folded(region), *members)
            pipe.zrem(self.keys.dropout_armed(region), *members)
            pipe.zrem(self.keys.dropout_found(region), *members)
            pipe.execute()

    def keep(self, region: str, device_ids: U64, pass_no: int) -> None:
        if device_ids.size:
            self.client.zadd(
                self.keys.dropout_found(region), dict.fromkeys(device_ids.tolist(), pass_no)
            )

    def claim_sweep(self, region: str, hold_ms: int) -> str | None:
        token = secrets.token_hex(8)
        taken = self.client.set(self.keys.dropout_lock(region), token, nx=True, px=hold_ms)
        return token if taken else None

    def release_sweep(self, region: str, token: str) -> None:
        self._release(keys=[self.keys.dropout_lock(region)], args=[token])

    def end_pass(self, region: str, pass_no: int, now_ts: float) -> int:
        k = self.keys
        found = k.dropout_found(region)
        # The found scores are pass numbers: the gone (and entries of devices no longer
        # remembered, which no keep renews) are a score range, read without the rest.
        pipe = self.client.pipeline(transaction=False)
        pipe.zrangebyscore(found, "-inf", f"({pass_no - 1}")
        pipe.zdiff([k.dropout_armed(region), found])
        pipe.zcard(k.dropout_folded(region))
        pipe.zcard(found)
        stale, unnumbered, n_folded, n_found = pipe.execute()
        # Remembered before passes were numbered: found by no pass yet, given this one.
        # ``fold`` numbers each device it remembers, so only fewer numbers than folded
        # devices make the server diff the whole folded set (a pass takes far longer than
        # this diff, but it holds Redis meanwhile). Stale numbers of devices no longer
        # remembered may hide a few for two passes, until they are dropped below.
        if n_folded > n_found:
            unnumbered.extend(self.client.zdiff([k.dropout_folded(region), found]))
        unnumbered = list(dict.fromkeys(unnumbered))
        spans = self.events(region)
        over = [str(g) for g, (_, hi) in spans.items() if hi < now_ts - _EVENT_SPAN_S]
        numbered, stale_chunks = _chunks(unnumbered), _chunks(stale)
        pipe = self.client.pipeline(transaction=False)
        for chunk in numbered:
            pipe.zadd(found, dict.fromkeys(chunk, pass_no))
        for chunk in stale_chunks:
            pipe.zmscore(k.dropout_folded(region), chunk)
            pipe.zmscore(k.dropout_armed(region), chunk)
            pipe.zrem(k.dropout_folded(region), *chunk)
            pipe.zrem(k.dropout_armed(region), *chunk)
            pipe.zrem(found, *chunk)
        if over:
            pipe.hdel(k.dropout_events(region), *over)
        replies = pipe.execute()[len(numbered) :]
        gone = 0
        for at in range(0, len(stale_chunks) * 5, 5):
            folded, armed = replies[at], replies[at + 1]
            gone += sum(f is not None or a is not None for f, a in zip(folded, armed, strict=True))
        return gone

    def events(self, region: str) -> dict[int, tuple[float, float]]:
        raw: Any = self.client.hgetall(self.keys.dropout_events(region))
        return {int(g): _span(v.decode() if isinstance(v, bytes) else v) for g, v in raw.items()}

    def note_events(self, region: str, spans: Mapping[int, tuple[float, float]]) -> None:
        if spans:
            merged = _widened(self.events(region), spans)
            fields = {str(g): f"{lo!r} {hi!r}" for g, (lo, hi) in merged.items()}
            self.client.hset(self.keys.dropout_events(region), mapping=fields)

    def page(self, region: str, page_size: int) -> StatePage:
        """The next page of ``region``'s pass: one SCAN step (COUNT ``page_size``), one MGET."""
        k = self.keys
        raw_cursor = self.client.get(k.dropout_cursor(region))
        cursor = int(raw_cursor or 0)
        cursor, names = self.client.scan(cursor, match=k.detector_state_pattern(), count=page_size)
        devices = [
            k.detector_device_id(name.decode() if isinstance(name, bytes) else name)
            for name in names
        ]
        members = [d for d in devices if d is not None]
        pipe = self.client.pipeline(transaction=False)
        pipe.set(k.dropout_cursor(region), int(cursor))
        # The page that ends a pass numbers the next one at once, so a sweep running
        # beside this one pages the new pass under its own number.
        if int(cursor) == 0:
            pipe.incr(k.dropout_pass(region))
        else:
            pipe.get(k.dropout_pass(region))
        if names:
            pipe.mget(names)
        if members:
            pipe.zmscore(k.dropout_folded(region), members)
            pipe.zmscore(k.dropout_armed(region), members)
        replies = pipe.execute()
        pass_no = int(replies[1] or 0) - (int(cursor) == 0)
        blobs: list[bytes | None] = replies[2] if names else []
        since = dict(zip(members, replies[3], strict=True)) if members else {}
        armed = dict(zip(members, replies[4], strict=True)) if members else {}
        ids: list[int] = []
        kept: list[bytes] = []
        for device, blob in zip(devices, blobs, strict=True):
            if device is not None and blob is not None:  # deleted between SCAN and MGET
                ids.append(device)
                kept.append(blob)
        return StatePage(
            np.array(ids, dtype=np.uint64),
            kept,
            int(cursor) == 0,
            _scores(ids, since),
            _scores(ids, armed),
            pass_no,
        )

    def mark(
        self,
        device_ids: U64,
        seen: list[bytes],
        marked: list[bytes],
        streams: Sequence[str],
        registry_version: int | None = None,
    ) -> BOOL:
        """Replace ``seen`` by ``marked`` where the state is still ``seen``; which were written.

        As a screening commit (``stores.detector_store``): the states are read again
        under a WATCH of the detector-write counts (global, and the devices' ``streams``:
        ``Registry.region_streams``), and the marks written with the global one counted,
        so a screening that loaded a state before its mark screens again from the mark.
        Nothing is written when another writer changes a state in between, past a few
        tries; those devices are looked at again on the next pass. Nor while the stored
        registry is not ``registry_version`` (the WATCH covers its key too): ``streams``
        came from a replaced snapshot, so a screening counting where they do not look
        could have changed a state unseen.
        """
        written = np.zeros(device_ids.size, dtype=bool)
        if not device_ids.size:
            return written
        k = self.keys
        counter = k.detector_writes.encode()
        stream_counters = [k.detector_stream_writes(s).encode() for s in streams]
        registry_key = k.registry_version.encode()
        get_registry = resp.command(b"GET", registry_key)
        mget = [
            resp.command_head(b"MGET", device_ids.size),
            resp.id_bulks(k.detector_state_head, device_ids),
        ]
        names = [k.detector_state(d) for d in device_ids.tolist()]
        for _ in range(MARK_PASSES):
            with resp.Session(self.client) as session:
                # Nothing is watched before this round trip answers: it may be resent.
                watch = resp.command(b"WATCH", counter, registry_key, *stream_counters)
                _, now, stored = session.run([watch, mget, get_registry], retry=True)
                if registry_moved(stored, registry_version):
                    session.run([resp.command(b"UNWATCH")])
                    return written
                same = np.array([a == b for a, b in zip(now, seen, strict=True)], dtype=bool)
                if not same.any():
                    session.run([resp.command(b"UNWATCH")])
                    return same
                pairs = [
                    arg
                    for name, blob, w in zip(names, marked, same, strict=True)
                    if w
                    for arg in (name, blob)
                ]
                applied = session.transaction(
                    [resp.command(b"MSET", *pairs), resp.command(b"INCR", counter)]
                )
            if applied is not None:
                return same
        return written


class MemoryDropoutStore:
    """The sweep over the in-memory detector states; a cursor per region, as in Redis."""

    def __init__(
        self, detector: MemoryDetectorStore, clock: Callable[[], float] | None = None
    ) -> None:
        self.detector = detector
        self._clock = clock or time.monotonic
        self._lock = threading.Lock()
        self._leases: dict[str, tuple[str, float]] = {}
        self._cursor: dict[str, int] = {}
        self._folded: dict[str, dict[int, float]] = {}
        self._armed: dict[str, dict[int, float]] = {}
        self._found: dict[str, dict[int, int]] = {}
        self._passes: dict[str, int] = {}
        self._events: dict[str, dict[int, tuple[float, float]]] = {}

    def fold(self, region: str, device_ids: U64, since_ts: F64, pass_no: int) -> None:
        with self._lock:
            folded = self._folded.setdefault(region, {})
            folded.update(zip(device_ids.tolist(), since_ts.tolist(), strict=True))
            self._found.setdefault(region, {}).update(dict.fromkeys(device_ids.tolist(), pass_no))

    def arm(self, region: str, device_ids: U64, at_ts: F64) -> None:
        with self._lock:
            armed = self._armed.setdefault(region, {})
            for d, at in zip(device_ids.tolist(), at_ts.tolist(), strict=True):
                armed.setdefault(d, at)

    def forget(self, region: str, device_ids: U64) -> None:
        with self._lock:
            for d in device_ids.tolist():
                self._folded.get(region, {}).pop(d, None)
                self._armed.get(region, {}).pop(d, None)
                self._found.get(region, {}).pop(d, None)

    def keep(self, region: str, device_ids: U64, pass_no: int) -> None:
        with self._lock:
            self._found.setdefault(region, {}).update(dict.fromkeys(device_ids.tolist(), pass_no))

    def claim_sweep(self, region: str, hold_ms: int) -> str | None:
        now = self._clock()
        with self._lock:
            held = self._leases.get(region)
            if held is not None and held[1] > now:
                return None
            token = secrets.token_hex(8)
            self._leases[region] = (token, now + hold_ms / 1000.0)
            return token

    def release_sweep(self, region: str, token: str) -> None:
        with self._lock:
            held = self._leases.get(region)
            if held is not None and held[0] == token:
                del self._leases[region]

    def end_pass(self, region: str, pass_no: int, now_ts: float) -> int:
        with self._lock:
            folded = self._folded.setdefault(region, {})
            armed = self._armed.setdefault(region, {})
            found = self._found.setdefault(region, {})
            remembered = {*folded, *armed}
            # Remembered before passes were numbered: found by no pass yet, given this one.
            found.update({d: pass_no for d in remembered if d not in found})
            gone = [d for d in remembered if found[d] < pass_no - 1]
            # Entries of devices no longer remembered go once stale, as in Redis.
            orphans = [d for d, p in found.items() if d not in remembered and p < pass_no - 1]
            for d in [*gone, *orphans]:
                folded.pop(d, None)
                armed.pop(d, None)
                found.pop(d, None)
            spans = self._events.setdefault(region, {})
            for group in [g for g, (_, hi) in spans.items() if hi < now_ts - _EVENT_SPAN_S]:
                del spans[group]
            return len(gone)

    def events(self, region: str) -> dict[int, tuple[float, float]]:
        with self._lock:
            return dict(self._events.get(region, {}))

    def note_events(self, region: str, spans: Mapping[int, tuple[float, float]]) -> None:
        with self._lock:
            known = self._events.setdefault(region, {})
            known.update(_widened(known, spans))

    def page(self, region: str, page_size: int) -> StatePage:
        with self._lock:
            start = self._cursor.get(region, 0)
            ids, blobs, nxt = self.detector.state_page(start, page_size)
            self._cursor[region] = nxt
            since = _scores(ids, self._folded.get(region, {}))
            armed = _scores(ids, self._armed.get(region, {}))
            pass_no = self._passes.get(region, 0)
            if nxt == 0:
                self._passes[region] = pass_no + 1
        return StatePage(np.array(ids, dtype=np.uint64), blobs, nxt == 0, since, armed, pass_no)

    def frontier(self, region: str) -> dict[str, float]:
        return self.detector.frontier(region)

    def mark(
        self,
        device_ids: U64,
        seen: list[bytes],
        marked: list[bytes],
        streams: Sequence[str],
        registry_version: int | None = None,
    ) -> BOOL:
        # The states themselves are compared under one lock, not per-stream counts, so
        # no registry hides a write from it: ``registry_version`` is ignored.
        done = self.detector.replace_states(device_ids.tolist(), seen, marked)
        return np.array(done, dtype=bool)


#: Compare-and-delete: only the holder's token releases a sweep's lease.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

#: Members per ZADD/ZREM in ``end_pass``: a pass may forget a whole region at once.
_CHUNK = 1_000


def _chunks(members: list[Any]) -> list[list[Any]]:
    return [members[i : i + _CHUNK] for i in range(0, len(members), _CHUNK)]


def _scores(ids: list[int], scores: Mapping[int, float | None]) -> F64:
    """Each device's score (NaN where it has none)."""
    found = (scores.get(d) for d in ids)
    return np.array([np.nan if v is None else float(v) for v in found], dtype=np.float64)


#: A folded silence's span is widened by later ones that overlap it within this (seconds);
#: past it, a new silence starts a new span (``FoldConfig.together_s``).
_EVENT_SPAN_S = 3600.0


def _span(text: str) -> tuple[float, float]:
    lo, hi = text.split()
    return float(lo), float(hi)


def _widened(
    known: Mapping[int, tuple[float, float]], spans: Mapping[int, tuple[float, float]]
) -> dict[int, tuple[float, float]]:
    out: dict[int, tuple[float, float]] = {}
    for group, (lo, hi) in spans.items():
        old = known.get(group)
        if old is not None and lo <= old[1] + _EVENT_SPAN_S:
            lo, hi = min(lo, old[0]), max(hi, old[1])
        out[group] = (lo, hi)
    return out
