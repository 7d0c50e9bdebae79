"""The producer: validate, classify, place, micro-batch and publish readings.

Accepts single readings (dicts or JSON bytes, as devices and gateways send
them) and columnar arrays (as a gateway batch hands them over). Bad readings
go to the dead-letter stream with their reason; they never fail the good ones
beside them.

A broker or store failure never reaches the caller: a batch that cannot be
published goes to the outbox (ingest/outbox.py) and is replayed in order once
the broker answers; while the outbox holds its bound, new readings are pushed
back (``IngestResult.pushed_back_index``), never dropped.

Readings admission control pushes back are screened at once, within a budget of their
own (``scheduler.held_screening``), so their detection does not wait for their routine
processing. Offered again later, they are not screened twice: the producer remembers,
per device, the newest event time it screened that way (``ingest.screened_marks``), so
a caller re-offering pushed-back readings needs to say nothing. A gateway holding
readings itself (behind older held ones) hands them to ``screen_held``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace

import numpy as np
import numpy.typing as npt

from ingest.held_screener import BeforeRegion, HeldScreener, SendCopies
from ingest.ingest_types import NONE
from ingest.ingest_types import OUTAGE_ERRORS as OUTAGE_ERRORS
from ingest.ingest_types import AcceptedHook as AcceptedHook
from ingest.ingest_types import BacklogGate as BacklogGate
from ingest.ingest_types import IngestResult as IngestResult
from ingest.ingest_types import PauseGate as PauseGate
from ingest.ingest_types import Placer as Placer
from ingest.ingest_types import Publisher as Publisher
from ingest.ingest_types import ScreenCost as ScreenCost
from ingest.ingest_types import home_placer as home_placer
from ingest.outbox import MemoryOutbox, Outbox
from ingest.premium_backlog import PremiumBacklog
from ingest.rejections import column_detail, raw_bytes
from ingest.unconfirmed import UnconfirmedWindow
from scheduler import defaults
from scheduler.batching import Batcher, BatchingConfig, HoldFirstTier
from scheduler.errors import InvalidReading
from scheduler.held_screening import HeldScreenBudget
from scheduler.model import Batch, DeadLetter
from scheduler.registry import Registry
from scheduler.validation import REASONS, Limits, check_columns, parse_reading
from stores.protocols import StateStore

OUTBOX_MAX_READINGS = defaults.OUTBOX_MAX_READINGS
REPLAY_BATCHES = defaults.OUTBOX_REPLAY_BATCHES


class Producer:
    def __init__(
        self,
        registry: Callable[[], Registry],
        publisher: Publisher,
        store: StateStore,
        limits: Limits | None = None,
        batching: BatchingConfig | None = None,
        producer_id: str = "p0",
        placer: Placer = home_placer,
        clock: Callable[[], float] = time.time,
        counter_flush_s: float = 0.1,
        backlog_gate: BacklogGate | None = None,
        screen_cost: ScreenCost | None = None,
        outbox: Outbox | None = None,
        outbox_max_readings: int = OUTBOX_MAX_READINGS,
        retry_s: float = 1.0,
        pause_gate: PauseGate | None = None,
        unconfirmed: UnconfirmedWindow | None = None,
        on_accepted: AcceptedHook | None = None,
        held_screening: HeldScreenBudget | None = None,
        premium_backlog: PremiumBacklog | None = None,
    ) -> None:
        """``backlog_gate`` turns on backpressure: readings of every tier but the first
        (premium is never pushed back) bound for a region past its cap are handed back.

        ``outbox`` keeps batches the broker did not take (in memory unless given a
        ``SpoolOutbox``); while it holds any, publishing is retried every ``retry_s``.
        ``unconfirmed`` keeps published batches until Redis has them on disk, and hands
        them over again after a Redis restart (``appendfsync everysec``).

        ``held_screening``: the budget readings held back are screened from (the default
        budget unless given); it applies when the publisher has ``screen_many``. It
        follows ``screen_cost`` when given (read with each backlog gate check).

        ``premium_backlog``: premium batches due while their region's premium queue is
        backed up stay in the batcher and coalesce (``scheduler.premium_coalescing``)."""
        self._registry = registry
        self.publisher = publisher
        self.store = store
        self.limits = limits or Limits()
        self.clock = clock
        self.placer = placer
        self.backlog_gate = backlog_gate
        self.screen_cost = screen_cost
        reg = registry()
        self._registry_snapshot = reg
        self.batcher = Batcher(reg.topology, self.limits.metrics, producer_id, batching)
        self.published_batches = 0
        self.published_readings = 0
        # Ingest counters go to the store at most every counter_flush_s (and on
        # flush), not once per call: a gateway may call ingest hundreds of times
        # a second, and each write is a round trip.
        self.counter_flush_s = counter_flush_s
        self._unsent_counts = {
            "ingested": 0,
            "accepted": 0,
            "pushed_back": 0,
            "screened_while_held": 0,
        }
        self._counts_sent_ts = float("-inf")
        self.outbox: Outbox = outbox if outbox is not None else MemoryOutbox()
        self.outbox_max_readings = outbox_max_readings
        self.retry_s = retry_s
        self.pause_gate = pause_gate
        self.unconfirmed = unconfirmed
        self.on_accepted = on_accepted
        self.last_outage: str | None = None
        self._retry_at = float("-inf")
        self._unsent_letters: list[DeadLetter] = []
        self.held_screener = HeldScreener(reg, producer_id, self.limits.metrics, held_screening)
        self.premium_backlog = premium_backlog

    def ingest(self, readings: Iterable[Mapping[str, object] | bytes | str]) -> IngestResult:
        """Single readings, each a dict or JSON bytes/str."""
        now = self.clock()
        ids: list[int] = []
        tss: list[float] = []
        vals: list[tuple[float, ...]] = []
        parsed_from: list[int] = []
        raws: list[bytes] = []
        letters: list[DeadLetter] = []
        for i, raw in enumerate(readings):
            try:
                d, t, v = parse_reading(raw, self.limits, now)
            except InvalidReading as exc:
                letters.append(DeadLetter(exc.reason, exc.detail, raw_bytes(raw), "ingest", now))
                continue
            ids.append(d)
            tss.append(t)
            vals.append(v)
            parsed_from.append(i)
            raws.append(raw_bytes(raw))
        m = len(self.limits.metrics)
        result = self.ingest_columns(
            np.asarray(ids, dtype=np.uint64),
            np.asarray(tss, dtype=np.float64),
            np.asarray(vals, dtype=np.float64).reshape(len(ids), m),
            now_ts=now,
            extra_letters=letters,
            payloads=raws,
        )
        if result.pushed_back:
            back = np.asarray(parsed_from, dtype=np.intp)[result.pushed_back_index]
            result = replace(result, pushed_back_index=back)
        return result

    def ingest_columns(
        self,
        device_id: npt.ArrayLike,
        ts: npt.ArrayLike,
        values: npt.ArrayLike,
        now_ts: float | None = None,
        extra_letters: list[DeadLetter] | None = None,
        payloads: Sequence[bytes] | None = None,
        offered_ts: npt.ArrayLike | None = None,
    ) -> IngestResult:
        """Columnar readings: ids (n,), event times (n,), values (n, metrics).

        ``payloads``, when given, are the bytes each row arrived as: a rejected row is
        dead-lettered with them rather than with a re-serialised copy.

        ``offered_ts`` (n,): when each reading was first offered, for readings offered
        again after a push-back or offered late by a paced source; latency runs from it
        (never later than now). Default: now."""
        now = self.clock() if now_ts is None else now_ts
        letters = extra_letters or []
        dev, t, v = self._columns(device_id, ts, values)
        reg = self._current_registry()
        rows = reg.lookup(dev)
        reason = check_columns(t, v, rows >= 0, self.limits, now)
        ok = reason == 0
        if not ok.all():
            for i in np.flatnonzero(~ok):
                payload = {"device_id": int(dev[i]), "ts": float(t[i])}
                if v.ndim == 2 and v.shape[0] == len(dev):
                    payload.update(zip(self.limits.metrics, map(float, v[i]), strict=False))
                code = REASONS[reason[i]]
                raw = payloads[int(i)] if payloads is not None else json.dumps(payload).encode()
                detail = column_detail(code, payload, self.limits, now)
                letters.append(DeadLetter(code, detail, raw, "ingest", now))
        take = np.flatnonzero(ok)
        room = self._room()
        pushed_back = pushed_region = NONE
        screened_early = 0
        to_screen = None
        if take.size > room:
            # The outbox is full (or Redis is near maxmemory): hold what does not fit.
            pushed_back = take[room:]
            pushed_region = reg.home_region[rows[pushed_back]].astype(np.intp)
            self.held_screener.marks.held_unscreened(rows[pushed_back], t[pushed_back])
            take = take[:room]
        if take.size:
            region, tier = self._place(reg, rows[take])
            if self.backlog_gate is not None:
                held = self._backlog_closed(len(reg.topology.regions))[region] & (tier > 0)
                if held.any():
                    i = take[held]
                    to_screen = (i, region[held], tier[held])
                    pushed_back = np.concatenate((pushed_back, i))
                    pushed_region = np.concatenate((pushed_region, region[held].astype(np.intp)))
                    order = np.argsort(pushed_back, kind="stable")
                    pushed_back, pushed_region = pushed_back[order], pushed_region[order]
                    take, region, tier = take[~held], region[~held], tier[~held]
            if offered_ts is None:
                first = np.full(take.size, now)
            else:
                first = np.minimum(np.asarray(offered_ts, dtype=np.float64)[take], now)
            later = tier > 0
            screened = np.zeros(take.size, dtype=np.bool_)
            if later.any():
                # Readings screened while they were held go to routine processing only.
                got = take[later]
                screened[later] = self.held_screener.admitted(rows[got], t[got], region[later], now)
            full = self.batcher.add(
                region,
                tier,
                dev[take],
                t[take],
                v[take],
                first,
                screened if screened.any() else None,
            )
            if self.on_accepted is not None:
                self.on_accepted(dev[take], t[take])
            premium = reg.topology.tiers[0]
            due_at = now
            if any(b.tier != premium for b in full):
                # Sending other tiers' full batches takes longer than premium's age limit
                # under load: premium waiting in the batcher goes out first, whatever its age.
                due_at = now + self.batcher.config.age_limit_s(premium)
            self._publish(self.batcher.due(due_at, self._premium_hold()), now)
            self._publish(full, now)
        if to_screen is not None:
            # After premium went out: screening held readings must not hold it up.
            i, held_region, held_tier = to_screen
            screened_early = self._screen_rows(
                rows[i], dev[i], t[i], v[i], held_region, held_tier, now
            )
        # Devices rejoining the sample whose older held readings are all admitted now
        # (in the batcher, so screened before): what they kept since is screened.
        screened_early += self.held_screener.rejoined(now, *self._held_senders(now))
        accepted = int(take.size)
        self._unsent_counts["ingested"] += accepted + len(letters)
        self._unsent_counts["accepted"] += accepted
        self._unsent_counts["pushed_back"] += int(pushed_back.size)
        self._unsent_counts["screened_while_held"] += screened_early
        if letters:
            self._unsent_letters.extend(letters)
            self._send_letters()
        reasons: dict[str, int] = {}
        for dl in letters:
            reasons[dl.reason] = reasons.get(dl.reason, 0) + 1
        # Age limits are checked on the clock after the work above, not at the call's start:
        # a large call takes long enough that premium batches it started are already due.
        self.poll(max(now, self.clock()))
        return IngestResult(
            accepted, len(letters), reasons, pushed_back, pushed_region, screened_early
        )

    def screen_held(
        self,
        device_id: npt.ArrayLike,
        ts: npt.ArrayLike,
        values: npt.ArrayLike,
        now_ts: float | None = None,
    ) -> int:
        """Screen now, within the held-screening budget, readings of every tier but premium
        that the caller holds back itself (a gateway keeping a region's new readings
        behind its pushed-back ones); offered later, they are not screened again.
        Returns the readings screened. Readings ingest would refuse are left alone."""
        now = self.clock() if now_ts is None else now_ts
        dev, t, v = self._columns(device_id, ts, values)
        reg = self._current_registry()
        rows = reg.lookup(dev)
        ok = check_columns(t, v, rows >= 0, self.limits, now) == 0
        ok[ok] = reg.tier[rows[ok]] > 0
        if not ok.any():
            return 0
        i = np.flatnonzero(ok)
        region, tier = self._place(reg, rows[i])
        n = self._screen_rows(rows[i], dev[i], t[i], v[i], region, tier, now)
        self._unsent_counts["screened_while_held"] += n
        return n

    def _columns(
        self, device_id: npt.ArrayLike, ts: npt.ArrayLike, values: npt.ArrayLike
    ) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """Readings as typed columns; one metric's values may come as a flat column."""
        dev = np.asarray(device_id, dtype=np.uint64)
        t = np.asarray(ts, dtype=np.float64)
        v = np.asarray(values, dtype=np.float64)
        if v.ndim == 1 and len(self.limits.metrics) == 1:
            v = v[:, None]
        return dev, t, v

    def _screen_rows(
        self,
        rows: npt.NDArray[np.int64],
        dev: npt.NDArray[np.uint64],
        t: npt.NDArray[np.float64],
        v: npt.NDArray[np.float64],
        region: npt.NDArray[np.integer],
        tier: npt.NDArray[np.integer],
        now: float,
    ) -> int:
        """Screening copies of held readings, through the publisher's ``screen_many``."""
        send, before_region = self._held_senders(now)
        return self.held_screener.screen((rows, dev, t, v), region, tier, now, send, before_region)

    def _held_senders(self, now: float) -> tuple[SendCopies | None, BeforeRegion]:
        """How held readings' copies are sent (None: not now), and what goes first."""
        screen_many = getattr(self.publisher, "screen_many", None)
        send = None
        if screen_many is not None and not self.degraded and not self._in_backoff():

            def send(copies: list[Batch]) -> bool:
                return self._guarded(screen_many, copies) is True

        def before_region(code: int) -> None:
            tiers = range(1, len(self._registry_snapshot.topology.tiers))
            self._publish(self.batcher.cut_region(code, tiers), now)

        return send, before_region

    def closed(self) -> npt.NDArray[np.bool_] | None:
        """Per region code, True where non-premium readings are pushed back now; None
        without a backlog gate."""
        if self.backlog_gate is None:
            return None
        return self._backlog_closed(len(self._registry_snapshot.topology.regions))

    def poll(self, now_ts: float | None = None) -> int:
        """Publish batches that reached their age limit; returns how many."""
        now = self.clock() if now_ts is None else now_ts
        if self.unconfirmed is not None:
            again = self._guarded(self.unconfirmed.check, now)
            if isinstance(again, list) and again:
                self.outbox.append(again)
        self._replay(now)
        due = self.batcher.due(now, self._premium_hold())
        self._publish(due, now)
        self.held_screener.poll(now, *self._held_senders(now))
        poll = getattr(self.publisher, "poll", None)
        if poll is not None and not self.outbox_held:
            self._guarded(poll, now)
        if now - self._counts_sent_ts >= self.counter_flush_s:
            self._send_counts(now)
            self._send_letters()
        return len(due)

    def next_due_ts(self, now_ts: float) -> float | None:
        """When ``poll`` next has a batch to publish, asked after a ``poll`` at ``now_ts``."""
        dues = (self.batcher.next_due_ts(), self.held_screener.next_due_ts())
        due = min((d for d in dues if d is not None), default=None)
        return due if self.premium_backlog is None else self.premium_backlog.recheck_ts(due, now_ts)

    def _premium_hold(self) -> HoldFirstTier | None:
        return None if self.premium_backlog is None else self.premium_backlog.hold

    def flush(self) -> int:
        """Publish everything buffered (shutdown, end of a run); what the broker does not
        take stays in the outbox. Returns the batches cut from the batcher."""
        now = self.clock()
        self._retry_at = float("-inf")  # shutting down: try the broker once more now
        self._replay(now)
        rest = self.batcher.drain()
        self._publish(rest, now)
        self.held_screener.flush(now, *self._held_senders(now))
        flush = getattr(self.publisher, "flush", None)
        if flush is not None and not self.outbox_held:
            self._guarded(flush)
        self._send_counts(now)
        self._send_letters()
        return len(rest)

    def _current_registry(self) -> Registry:
        """The registry, or the last snapshot while the store cannot be read."""
        fresh = self._guarded(self._registry)
        if isinstance(fresh, Registry):
            self._registry_snapshot = fresh
            self.held_screener.rebind(fresh)
        return self._registry_snapshot

    @property
    def outbox_held(self) -> int:
        """Readings waiting in the outbox for the broker."""
        return self.outbox.held_readings

    @property
    def degraded(self) -> bool:
        """True while the broker is not taking batches (the outbox holds some)."""
        return len(self.outbox) > 0

    def _room(self) -> int:
        """How many new readings ingest may take now."""
        if self.pause_gate is not None and self._guarded(self.pause_gate) is True:
            return 0
        if not self.degraded:
            return 1 << 62
        held = self.outbox.held_readings + self.batcher.buffered_readings
        return max(0, self.outbox_max_readings - held)

    def _place(
        self, reg: Registry, rows: npt.NDArray[np.int64]
    ) -> tuple[npt.NDArray[np.integer], npt.NDArray[np.integer]]:
        tier = reg.tier[rows]
        placed = self._guarded(self.placer, reg, rows)
        # Health cannot be read: the home region is always within residency.
        return (reg.home_region[rows] if placed is None else placed), tier  # type: ignore[return-value]

    def _backlog_closed(self, n_regions: int) -> npt.NDArray[np.bool_]:
        assert self.backlog_gate is not None
        closed = self._guarded(self.backlog_gate)
        ratio = None if self.screen_cost is None else self.screen_cost()
        if ratio is not None:
            self.held_screener.budget.follow_cost(ratio)
        return np.zeros(n_regions, dtype=bool) if closed is None else np.asarray(closed, bool)

    def _guarded(self, fn: Callable[..., object], *args: object) -> object | None:
        """Call ``fn``; an outage is noted and answered with None instead of raised.

        Within ``retry_s`` of an outage Redis is not asked at all: a stopped server
        costs a socket timeout per call, and the gateway must not wait for each."""
        if self._in_backoff():
            return None
        try:
            return fn(*args)
        except OUTAGE_ERRORS as exc:
            self._note_outage(exc)
            return None

    def _in_backoff(self) -> bool:
        return self.clock() < self._retry_at

    def _note_outage(self, exc: BaseException) -> None:
        self.last_outage = f"{type(exc).__name__}: {exc}"
        self._retry_at = self.clock() + self.retry_s

    def _send_counts(self, now: float) -> None:
        self._counts_sent_ts = now
        if not any(self._unsent_counts.values()) or self._in_backoff():
            return
        try:
            self.store.incr_counters(self._unsent_counts)
        except OUTAGE_ERRORS as exc:
            self._note_outage(exc)  # kept for the next flush
            return
        self._unsent_counts = dict.fromkeys(self._unsent_counts, 0)

    def _send_letters(self) -> None:
        if not self._unsent_letters or self._in_backoff():
            return
        try:
            self.store.add_dead_letters(self._unsent_letters)
        except OUTAGE_ERRORS as exc:
            self._note_outage(exc)
            return
        self._unsent_letters = []

    def _publish(self, batches: list[Batch], now: float) -> None:
        """Hand batches over: to the broker, or (broker away, or older ones still waiting)
        to the outbox, behind what it holds, so order is kept."""
        if not batches:
            return
        if self.degraded or now < self._retry_at:
            self.outbox.append(batches)
            return
        if not self._send(batches, now):
            self.outbox.append(batches)

    def _replay(self, now: float) -> None:
        """Publish what the outbox holds, oldest first, once the retry interval has passed."""
        while len(self.outbox) and now >= self._retry_at:
            group = self.outbox.peek(REPLAY_BATCHES)
            if not self._send(group, now):
                return
            self.outbox.release(len(group))

    def _send(self, batches: list[Batch], now: float) -> bool:
        try:
            publish_many = getattr(self.publisher, "publish_many", None)
            if publish_many is not None:
                publish_many(batches)
            else:
                for b in batches:
                    self.publisher.publish(b)
        except OUTAGE_ERRORS as exc:
            # Part of the group may have gone out: replaying it is harmless, chunk
            # claims apply a batch id once.
            self._note_outage(exc)
            return False
        self.published_batches += len(batches)
        self.published_readings += sum(len(b) for b in batches)
        if self.unconfirmed is not None:
            self.unconfirmed.sent(batches, now)
        return True
