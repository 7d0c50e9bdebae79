"""Per-device detector state between batches: in Redis, or in memory for the embedded run.

A screening task ``load``s its batch (one MGET of the batch's screen claim and outbox
entry and every device's state), screens, then ``commit``s: one MULTI/EXEC that claims
the batch id, writes every state with one MSET, adds the counts and detection latency
histograms and keeps the batch's alerts in an outbox entry until ``alerts_sent``. Both
go out packed from arrays (``stores.resp``). A batch whose claim exists is not screened
again, so a redelivery neither advances a device's state twice nor emits its alerts
twice; it only publishes again alerts its commit left in the outbox.

Two screenings holding one device (two workers, or a held copy beside its admitted
copy) both load its old state: a commit applies only if none of its devices' states
changed since its load, otherwise it returns False and the caller screens again from
the states loaded anew. So a device's state is the fold of every reading, in the order
the commits applied, and only the screening that committed publishes alerts.

Redis checks this without watching each device's key: every writer of states counts
itself inside its own MULTI/EXEC, and ``load`` reads the counts with the states. A
batch whose devices are all of one detector write stream (one home region's devices
of one tier, ``scheduler.registry.detector_stream``) counts in that stream's
``Keys.detector_stream_writes``; every other writer (a batch of several streams, a
dropout mark, compaction) in the global ``Keys.detector_writes``. A commit WATCHes the
global count and its devices' streams', and reads them again: still the
same, no state changed and EXEC applies unless one changes meanwhile; moved on (another
batch committed), it reads its own devices' states again under the WATCH and applies if
they are the bytes it screened. One global count made nearly every commit read its
states again and every large one lose EXEC to other regions' commits: unpaced 10M
drained 101,289-107,571 readings/s instead of 145,520-168,968. Redis
7.0's WATCH scans the keys its connection already watches for each key it adds, so
watching a batch's 5,000 device keys costs the server about 110 ms of CPU
(``bench/watch_cost.py``); the count is one key.

Which counts a batch checks and counts in follows from the registry snapshot its worker
holds: one whose devices moved (another home region or tier, renumbered, added) checks
other streams than a screening with the new registry counts in, and could commit over
its states unseen. So ``load`` reads ``Keys.registry_version`` in its MGET and raises
``RegistryChanged`` when the caller's snapshot is another version, and a commit WATCHes
that key too and is refused, as a collision, when it moved since the load.

A batch refused by a collision ``take_turn``s before screening again: while it holds
its region's turn, the region's other batches' loads and commits wait (at most
``TURN_TTL_MS``), so the batch that lost once commits next instead of losing again to
the other worker's next batch over the same devices, and that batch loads the states it
commits after. The turn is per region: batches collide over devices their region
screens, and another region's screenings (premium's detection bound is 1 s) need not
wait for it. A waiter looks again at growing intervals and holds no pooled connection
meanwhile.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgpack
import numpy as np
import numpy.typing as npt
import redis

from scheduler import defaults
from scheduler.detector_state import pack_state_rows, pack_states, unpack_states
from scheduler.errors import RegistryChanged
from scheduler.latency import merge_counts
from stores import resp
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

#: Times a commit tries again while other batches' commits keep moving the write count
#: but leave its own devices' states alone; past them the caller loads and screens anew.
COMMIT_PASSES = 8
#: How long a batch refused by a collision keeps the others waiting while it screens again
#: (the turn is given back by its commit, or lapses if its worker dies).
TURN_TTL_MS = 500
#: How soon a load or commit waiting for another batch's turn first looks again; the
#: interval doubles up to ``TURN_POLL_MAX_S``. A re-screening holds the turn for a load,
#: a screen and a commit (milliseconds): a short wait sees its end early, and a long one
#: (a dead holder) costs Redis a round trip every few ms, not every one.
TURN_POLL_S = 0.001
TURN_POLL_MAX_S = 0.008


@dataclass(frozen=True)
class LoadedBatch:
    """What ``load`` read for one batch: its devices' states, or that it was screened."""

    batch_id: str
    device_ids: U64
    #: One row per device; None when the batch was screened before.
    states: F64 | None
    #: With ``states`` None: the alerts payload the batch's commit kept in the outbox,
    #: perhaps never published (a crash between commit and publish); else None.
    unsent_alerts: dict[str, Any] | None = None
    #: What ``commit`` checks is unchanged, as the store keeps it.
    version: Any = field(default=None, repr=False, compare=False)
    #: Whose turn (``DetectorStore.take_turn``) the load waited for and the commit waits
    #: for, or gives back: the region screening the batch.
    region: str = ""


class DetectorStore(Protocol):
    def load(
        self,
        batch_id: str,
        device_ids: U64,
        metrics: int,
        region: str = "",
        streams: Sequence[str] = (),
        registry_version: int | None = None,
    ) -> LoadedBatch:
        """State rows for ``device_ids`` (fresh where unknown), or the batch screened before.

        Waits while another batch holds ``region``'s turn; the commit of what it returns
        waits for that turn too, and gives it back if ``batch_id`` holds it. ``streams``: the
        devices' detector write streams (``Registry.home_streams``); empty when unknown,
        and the commit then checks and counts in the global count only.

        ``registry_version``: the version of the registry snapshot ``streams`` came from.
        Raises ``RegistryChanged`` when the stored registry is another version: the
        streams may be wrong, so the commit could miss another screening's write."""

    def commit(
        self,
        loaded: LoadedBatch,
        states: F64,
        latency: Mapping[int, int],
        readings: int,
        alerts: int,
        alert_record: bytes = b"",
        frontier: Frontier | None = None,
        latency_stages: tuple[str, ...] = (),
        alerts_payload: Mapping[str, Any] | None = None,
    ) -> bool:
        """Claim the batch and store its states, alert latency and counts at once, if no
        state of ``loaded``'s devices changed since it was loaded.

        ``alert_record`` (``scheduler.alert_record``) joins the capped recent-alerts log;
        ``frontier`` (region, tier, newest event ts) advances that screening stream's
        frontier (``scheduler.silence_clock``), never moving it back; ``latency_stages``
        are histograms that count ``latency`` too, besides the "alert" stage;
        ``alerts_payload`` is kept in the batch's outbox until ``alerts_sent``.
        False (and nothing stored) when the batch was claimed before (counted as a
        duplicate), or a device's state or the stored registry's version changed since
        the load (a collision): ``load`` again to see which.
        """

    def alerts_sent(self, batch_id: str) -> None:
        """The batch's alerts are published: its outbox entry goes."""

    def take_turn(self, batch_id: str, region: str) -> bool:
        """Make ``batch_id``, refused by a collision, the next batch of ``region`` to load
        and commit: the region's others wait while it holds the turn (until its commit, at
        most ``TURN_TTL_MS``); other regions do not. False while another batch holds it."""

    def give_turn(self, batch_id: str, region: str) -> None:
        """``batch_id`` ends without a commit (screened by another delivery, or handed back
        to Celery): ``region``'s others need not wait out its turn."""

    def frontier(self, region: str) -> dict[str, float]:
        """Per screening stream (tier name) of ``region``, the newest event ts screened."""

    def recent_alerts(self) -> list[bytes]:
        """The recent-alerts log, newest batch first (at most ``RECENT_ALERT_BATCHES``)."""

    def add_latency(self, stage: str, latency: Mapping[int, int]) -> None:
        """Add bucket counts to a detection latency histogram (e.g. the "notify" stage)."""

    def detection_histogram(self, stage: str = ALERT_STAGE) -> dict[int, int]: ...

    def screen_counters(self) -> dict[str, int]:
        """``screened_readings``, ``device_alerts``, ``screen_duplicates`` and
        ``screen_collisions`` (commits refused: a device's state or the registry changed
        since the load)."""


COUNTER_NAMES = ("screened_readings", "device_alerts", "screen_duplicates", "screen_collisions")


def _packed_alerts(payload: Mapping[str, Any]) -> bytes:
    packed: bytes = msgpack.packb(dict(payload), use_bin_type=True)
    return packed


def _unpacked_alerts(blob: bytes) -> dict[str, Any]:
    payload: dict[str, Any] = msgpack.unpackb(blob, raw=False)
    return payload


@dataclass(frozen=True)
class _RedisVersion:
    """The write count and the state blobs a batch was screened from, and the packed
    MGET that reads those blobs again."""

    #: The write counts the commit checks (``counters``, as read with the states) and the
    #: one it counts itself in.
    counters: tuple[bytes, ...]
    writes: tuple[bytes | None, ...]
    own: bytes
    blobs: list[bytes | None]
    reread: resp.Command
    #: The stored registry version as read with the states (None: none stored).
    registry_at: bytes | None


class _WatchLost(Exception):
    """Raised when the connection died while holding the WATCH."""


class _Pass(enum.Enum):
    """How one WATCH pass of a commit ended."""

    APPLIED = enum.auto()
    #: Claimed before (counted as a duplicate) or a device's state changed (a collision).
    REFUSED = enum.auto()
    #: Another writer moved the count between the check and EXEC: try again.
    WATCH_FIRED = enum.auto()
    #: Another batch holds the region's turn: wait for it, off the connection.
    TURN_HELD = enum.auto()


_UNWATCH = resp.command(b"UNWATCH")


def registry_moved(stored: bytes | None, registry_version: int | None) -> bool:
    """A registry version is stored and it is not the snapshot's the caller holds."""
    return registry_version is not None and stored is not None and int(stored) != registry_version


def _held_by_another(turn: bytes | None, batch_id: str) -> bool:
    return turn is not None and turn.decode() != batch_id


#: The counter of commits refused because a device's state changed since the load.
_COLLIDED = "screen_collisions"


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

    def load(
        self,
        batch_id: str,
        device_ids: U64,
        metrics: int,
        region: str = "",
        streams: Sequence[str] = (),
        registry_version: int | None = None,
    ) -> LoadedBatch:
        k = self.keys
        keys = resp.id_bulks(k.detector_state_head, device_ids)
        counters, own = self._counters(streams)
        n = len(counters)
        mget = [
            resp.command_head(b"MGET", 4 + n + device_ids.size),
            resp.bulk(k.screen_claim(batch_id).encode()),
            resp.bulk(k.screen_outbox(batch_id).encode()),
            resp.bulk(k.screen_turn(region).encode()),
            resp.bulk(k.registry_version.encode()),
            *(resp.bulk(c) for c in counters),
            keys,
        ]
        with resp.Session(self.client) as session:
            (blobs,) = session.run([mget], retry=True)
        if _held_by_another(blobs[2], batch_id):
            self._await_turn(region, batch_id)
            with resp.Session(self.client) as session:
                (blobs,) = session.run([mget], retry=True)
        claimed, outbox, registry_at = blobs[0], blobs[1], blobs[3]
        writes, states = blobs[4 : 4 + n], blobs[4 + n :]
        if claimed is not None:
            unsent = None if outbox is None else _unpacked_alerts(outbox)
            return LoadedBatch(batch_id, device_ids, None, unsent, region=region)
        if registry_moved(registry_at, registry_version):
            raise RegistryChanged(
                f"batch {batch_id}: registry version {int(registry_at or 0)} is stored, "
                f"screening with version {registry_version}"
            )
        reread = [resp.command_head(b"MGET", device_ids.size), keys]
        version = _RedisVersion(counters, tuple(writes), own, states, reread, registry_at)
        states_rows = unpack_states(states, metrics)
        return LoadedBatch(batch_id, device_ids, states_rows, None, version, region)

    def commit(
        self,
        loaded: LoadedBatch,
        states: F64,
        latency: Mapping[int, int],
        readings: int,
        alerts: int,
        alert_record: bytes = b"",
        frontier: Frontier | None = None,
        latency_stages: tuple[str, ...] = (),
        alerts_payload: Mapping[str, Any] | None = None,
    ) -> bool:
        """Claim the batch and write every state in one MULTI/EXEC.

        States are bounded by the fleet (one per device), so they carry no TTL;
        the maintenance compaction drops those of devices silent for long. A
        native MSET costs Redis far less than a SET EX per device in Lua.
        """
        if loaded.states is None or not isinstance(loaded.version, _RedisVersion):
            raise ValueError(f"batch {loaded.batch_id} was not loaded for screening")
        k = self.keys
        cmd = resp.command
        claim = k.screen_claim(loaded.batch_id)
        writes: list[resp.Command] = [cmd(b"SET", claim, b"1", b"EX", self.claim_ttl_s)]
        if loaded.device_ids.size:
            rows = pack_state_rows(states)
            mset = resp.command_head(b"MSET", 2 * loaded.device_ids.size)
            writes.append([mset, resp.id_bulks(k.detector_state_head, loaded.device_ids, rows)])
        writes += [
            cmd(b"INCR", loaded.version.own),
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
        if alerts_payload is not None:
            outbox = k.screen_outbox(loaded.batch_id)
            packed = _packed_alerts(alerts_payload)
            writes.append(cmd(b"SET", outbox, packed, b"EX", self.claim_ttl_s))
        passes, waited = 0, False
        while passes < COMMIT_PASSES:
            try:
                with resp.Session(self.client) as session:
                    ended = self._commit_once(
                        session, claim.encode(), loaded, writes, wait_turn=not waited
                    )
            except _WatchLost:
                # Perhaps after EXEC applied everything: only the claim itself may say
                # "applied before", so the next pass reads it again.
                passes += 1
                continue
            if ended is _Pass.TURN_HELD:
                # Once per commit, as a load: a holder that keeps the turn past its TTL
                # (refused again) does not hold this commit up for good.
                self._await_turn(loaded.region, loaded.batch_id)
                waited = True
                continue
            if ended is not _Pass.WATCH_FIRED:
                return ended is _Pass.APPLIED
            passes += 1
        return False

    def _commit_once(
        self,
        session: resp.Session,
        claim: bytes,
        loaded: LoadedBatch,
        writes: list[resp.Command],
        wait_turn: bool,
    ) -> _Pass:
        k = self.keys
        version = loaded.version
        assert isinstance(version, _RedisVersion)
        turn_key = k.screen_turn(loaded.region)
        registry_key = k.registry_version.encode()
        # Nothing is watched before this round trip answers, so it may reconnect and resend.
        watch = [
            resp.command(b"WATCH", registry_key, *version.counters),
            resp.command(b"MGET", claim, turn_key, registry_key, *version.counters),
        ]
        _, (claimed, turn, registry_now, *counted) = session.run(watch, retry=True)
        writes_now = tuple(counted)
        if wait_turn and _held_by_another(turn, loaded.batch_id):
            session.run([_UNWATCH])
            return _Pass.TURN_HELD
        if turn is not None and turn.decode() == loaded.batch_id:
            writes = [*writes, resp.command(b"DEL", turn_key)]
        if claimed is not None:
            session.run([_UNWATCH, resp.command(b"HINCRBY", k.counters, "screen_duplicates", 1)])
            return _Pass.REFUSED
        try:
            # The streams this batch checks came from a registry now replaced: a
            # screening with the new one may count its writes where this one does not
            # look, even with these very states. Load (and see why) again.
            collided = registry_now != version.registry_at
            if not collided and writes_now != version.writes:
                (now,) = session.run([version.reread])
                collided = now != version.blobs
            if collided:
                session.run([_UNWATCH, resp.command(b"HINCRBY", k.counters, _COLLIDED, 1)])
                return _Pass.REFUSED
            replies = session.transaction(writes)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise _WatchLost from exc
        return _Pass.WATCH_FIRED if replies is None else _Pass.APPLIED

    def _counters(self, streams: Sequence[str]) -> tuple[tuple[bytes, ...], bytes]:
        """The write counts a batch's commit checks, and the one it counts itself in.

        A batch whose devices are all of one stream counts in that stream's; any other
        (several streams, or none known) in the global count every commit checks, and
        checks its streams' counts besides."""
        k = self.keys
        own = k.detector_stream_writes(streams[0]) if len(streams) == 1 else k.detector_writes
        counters = (
            k.detector_writes.encode(),
            *(k.detector_stream_writes(s).encode() for s in sorted(set(streams))),
        )
        return counters, own.encode()

    def alerts_sent(self, batch_id: str) -> None:
        self.client.delete(self.keys.screen_outbox(batch_id))

    def take_turn(self, batch_id: str, region: str) -> bool:
        turn = self.keys.screen_turn(region)
        if self.client.set(turn, batch_id, nx=True, px=TURN_TTL_MS):
            return True
        # Already ours (refused again while holding it): hold it a while longer.
        with self.client.pipeline(transaction=False) as pipe:
            pipe.get(turn)
            pipe.pexpire(turn, TURN_TTL_MS, xx=True)
            holder, _ = pipe.execute()
        return holder is not None and bytes(holder).decode() == batch_id

    def give_turn(self, batch_id: str, region: str) -> None:
        turn = self.keys.screen_turn(region)
        with self.client.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(turn)
                holder = pipe.get(turn)
                if holder is None or bytes(holder).decode() != batch_id:
                    return
                pipe.multi()
                pipe.delete(turn)
                pipe.execute()
            except redis.WatchError:
                return  # it lapsed and another batch took it meanwhile

    def _await_turn(self, region: str, batch_id: str) -> None:
        """Wait while another batch holds ``region``'s turn, at most its TTL (it may have
        died). Each look borrows a pooled connection for one GET only: a waiter sleeping
        on one would keep it from the holder's worker threads, which need it to commit."""
        turn = self.keys.screen_turn(region)
        deadline = time.monotonic() + TURN_TTL_MS / 1000
        poll_s = TURN_POLL_S
        while (left_s := deadline - time.monotonic()) > 0:
            time.sleep(min(poll_s, left_s))
            if not _held_by_another(self.client.get(turn), batch_id):
                return
            poll_s = min(2 * poll_s, TURN_POLL_MAX_S)

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
    """The in-memory twin: one lock makes ``commit`` atomic, and under it a commit compares
    its devices' states with those it loaded, as the Redis store does."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: Notified when a region's turn is given back: its waiters wake at once.
        self._turn_freed = threading.Condition(self._lock)
        self._claims: set[str] = set()
        self._states: dict[int, bytes] = {}
        self._latency: dict[str, dict[int, int]] = {}
        self._counters = dict.fromkeys(COUNTER_NAMES, 0)
        self._recent: list[bytes] = []
        #: device → monotonic time its state was last written (Redis's OBJECT IDLETIME).
        self._touched: dict[int, float] = {}
        self._frontier: dict[str, dict[str, float]] = {}
        #: batch id → alerts payload its commit kept until published (``alerts_sent``).
        self._outbox: dict[str, dict[str, Any]] = {}
        #: region → (batch id, monotonic expiry) of the batch holding its turn.
        self._turns: dict[str, tuple[str, float]] = {}

    def load(
        self,
        batch_id: str,
        device_ids: U64,
        metrics: int,
        region: str = "",
        streams: Sequence[str] = (),
        registry_version: int | None = None,
    ) -> LoadedBatch:
        # ``registry_version`` is accepted and ignored: a commit here compares the states
        # themselves under one lock, not per-stream counts, so no registry hides a write.
        with self._lock:
            self._await_turn(region, batch_id)
            if batch_id in self._claims:
                unsent = self._outbox.get(batch_id)
                return LoadedBatch(batch_id, device_ids, None, unsent, region=region)
            blobs: list[bytes | None] = [self._states.get(d) for d in device_ids.tolist()]
        states = unpack_states(blobs, metrics)
        return LoadedBatch(batch_id, device_ids, states, None, blobs, region)

    def commit(
        self,
        loaded: LoadedBatch,
        states: F64,
        latency: Mapping[int, int],
        readings: int,
        alerts: int,
        alert_record: bytes = b"",
        frontier: Frontier | None = None,
        latency_stages: tuple[str, ...] = (),
        alerts_payload: Mapping[str, Any] | None = None,
    ) -> bool:
        if loaded.states is None or not isinstance(loaded.version, list):
            raise ValueError(f"batch {loaded.batch_id} was not loaded for screening")
        ids = loaded.device_ids.tolist()
        blobs = pack_states(states)
        with self._lock:
            self._await_turn(loaded.region, loaded.batch_id)
            if loaded.batch_id in self._claims:
                self._counters["screen_duplicates"] += 1
                return False
            if [self._states.get(d) for d in ids] != loaded.version:
                self._counters[_COLLIDED] += 1
                return False
            self._give_back(loaded.region, loaded.batch_id)
            self._claims.add(loaded.batch_id)
            self._counters["screened_readings"] += readings
            self._counters["device_alerts"] += alerts
            self._states.update(zip(ids, blobs, strict=True))
            self._touched.update(dict.fromkeys(ids, time.monotonic()))
            for stage in (ALERT_STAGE, *latency_stages):
                self._merge(stage, latency)
            if alert_record:
                self._recent.insert(0, alert_record)
                del self._recent[RECENT_ALERT_BATCHES:]
            if frontier is not None:
                region, tier, newest_ts = frontier
                streams = self._frontier.setdefault(region, {})
                streams[tier] = max(streams.get(tier, newest_ts), newest_ts)
            if alerts_payload is not None:
                self._outbox[loaded.batch_id] = dict(alerts_payload)
            return True

    def alerts_sent(self, batch_id: str) -> None:
        with self._lock:
            self._outbox.pop(batch_id, None)

    def take_turn(self, batch_id: str, region: str) -> bool:
        with self._lock:
            now = time.monotonic()
            turn = self._turns.get(region)
            if turn is None or turn[0] == batch_id or turn[1] <= now:
                self._turns[region] = (batch_id, now + TURN_TTL_MS / 1000)
                return True
            return False

    def give_turn(self, batch_id: str, region: str) -> None:
        with self._lock:
            self._give_back(region, batch_id)

    def _give_back(self, region: str, batch_id: str) -> None:
        """Under the lock: ``batch_id``'s turn of ``region`` ends, its waiters wake."""
        turn = self._turns.get(region)
        if turn is not None and turn[0] == batch_id:
            del self._turns[region]
            self._turn_freed.notify_all()

    def _await_turn(self, region: str, batch_id: str) -> None:
        """Under the lock: wait while another batch holds ``region``'s turn, at most its
        TTL (the wait releases the lock)."""
        deadline = time.monotonic() + TURN_TTL_MS / 1000
        while (turn := self._turns.get(region)) is not None and turn[0] != batch_id:
            left_s = min(deadline, turn[1]) - time.monotonic()
            if left_s <= 0:
                return
            self._turn_freed.wait(left_s)

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
