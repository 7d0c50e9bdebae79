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

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace

import numpy as np
import numpy.typing as npt

from ingest.admission_step import Admission, hand_back
from ingest.broker_link import BrokerLink
from ingest.held_copies import HeldCopies
from ingest.held_screener import HeldScreener
from ingest.ingest_tally import IngestTally
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
from ingest.outbox import Outbox
from ingest.premium_backlog import PremiumBacklog
from ingest.rejections import column_letters
from ingest.single_readings import Reading, as_columns, parse_singles
from ingest.unconfirmed import UnconfirmedWindow
from scheduler import defaults
from scheduler.batching import Batcher, BatchingConfig, HoldFirstTier
from scheduler.held_screening import HeldScreenBudget
from scheduler.model import Batch, DeadLetter
from scheduler.registry import Registry
from scheduler.validation import Limits, check_columns
from stores.protocols import StateStore

OUTBOX_MAX_READINGS = defaults.OUTBOX_MAX_READINGS


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
        """``backlog_gate`` turns on backpressure (``ingest.admission_step``); ``outbox``,
        ``retry_s`` and ``unconfirmed`` keep what the broker did not take, or may have
        lost (``ingest.broker_link``). ``held_screening``: the budget held-back readings
        are screened from, following ``screen_cost`` when given. ``premium_backlog``:
        premium batches due while their region's premium queue is backed up stay in the
        batcher and coalesce (``scheduler.premium_coalescing``)."""
        self._registry = registry
        self.store = store
        self.limits = limits or Limits()
        self.clock = clock
        self.placer = placer
        reg = registry()
        self._registry_snapshot = reg
        self.batcher = Batcher(reg.topology, self.limits.metrics, producer_id, batching)
        self.link = BrokerLink(publisher, outbox, unconfirmed, retry_s, clock)
        self.tally = IngestTally(store, self.link, counter_flush_s)
        self.admission = Admission(
            self.link, backlog_gate, screen_cost, pause_gate, outbox_max_readings
        )
        self.on_accepted = on_accepted
        self.held_screener = HeldScreener(reg, producer_id, self.limits.metrics, held_screening)
        self.held_copies = HeldCopies(self.held_screener, self.link, self.batcher)
        self.premium_backlog = premium_backlog

    @property
    def publisher(self) -> Publisher:
        return self.link.publisher

    @publisher.setter
    def publisher(self, publisher: Publisher) -> None:
        self.link.publisher = publisher

    @property
    def outbox(self) -> Outbox:
        return self.link.outbox

    @property
    def unconfirmed(self) -> UnconfirmedWindow | None:
        return self.link.unconfirmed

    def ingest(self, readings: Iterable[Reading]) -> IngestResult:
        """Single readings, each a dict or JSON bytes/str."""
        now = self.clock()
        got = parse_singles(readings, self.limits, now)
        result = self.ingest_columns(
            got.device_id, got.ts, got.values, now, got.letters, got.payloads
        )
        if result.pushed_back:
            result = replace(result, pushed_back_index=got.parsed_from[result.pushed_back_index])
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
        dev, t, v = as_columns(device_id, ts, values, self.limits)
        reg = self._current_registry()
        rows = reg.lookup(dev)
        reason = check_columns(t, v, rows >= 0, self.limits, now)
        ok = reason == 0
        if not ok.all():
            letters.extend(column_letters(dev, t, v, reason, payloads, self.limits, now))
        take = np.flatnonzero(ok)
        room = self.admission.room(self.batcher.buffered_readings)
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
            closed = self.closed()
            if closed is not None and (held := closed[region] & (tier > 0)).any():
                i = take[held]
                to_screen = (i, region[held], tier[held])
                pushed_back, pushed_region = hand_back(pushed_back, pushed_region, i, region[held])
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
                screened[later] = self.held_copies.admitted(
                    rows[got], t[got], region[later], now, first[later]
                )
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
            screened_early = self.held_copies.screen(
                rows[i], dev[i], t[i], v[i], held_region, held_tier, now
            )
        screened_early += self.held_copies.rejoined(now)
        accepted = int(take.size)
        self.tally.count("ingested", accepted + len(letters))
        self.tally.count("accepted", accepted)
        self.tally.count("pushed_back", int(pushed_back.size))
        self.tally.count("screened_while_held", screened_early)
        self.tally.dead_letter(letters)
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
        dev, t, v = as_columns(device_id, ts, values, self.limits)
        reg = self._current_registry()
        rows = reg.lookup(dev)
        i = np.flatnonzero(check_columns(t, v, rows >= 0, self.limits, now) == 0)
        # By index, not boolean mask: tiers are scattered over devices, and numpy gathers
        # by such a mask many times slower.
        i = i[np.flatnonzero(reg.tier[rows[i]] > 0)]
        if not i.size:
            return 0
        region, tier = self._place(reg, rows[i])
        n = self.held_copies.screen(rows[i], dev[i], t[i], v[i], region, tier, now)
        self.tally.count("screened_while_held", n)
        return n

    def closed(self) -> npt.NDArray[np.bool_] | None:
        """Per region code, True where non-premium readings are pushed back now; None
        without a backlog gate."""
        n_regions = len(self._registry_snapshot.topology.regions)
        return self.admission.closed(n_regions, self.held_screener.budget)

    def poll(self, now_ts: float | None = None) -> int:
        """Publish batches that reached their age limit; returns how many."""
        now = self.clock() if now_ts is None else now_ts
        self.link.recover(now)
        self.link.replay(now)
        due = self.batcher.due(now, self._premium_hold())
        self._publish(due, now)
        self.held_copies.poll(now)
        self.link.poll_publisher(now)
        if self.tally.due(now):
            self.tally.send_counts(now)
            self.tally.send_letters()
        return len(due)

    def send_premium(self, now_ts: float | None = None) -> int:
        """Publish premium's buffered readings now, whatever their age (premium coalescing
        may still hold a region's); returns the batches. For a caller about to spend longer
        than premium's age limit before its next ``ingest`` or ``poll``: the age limit is
        only checked then, so premium would wait for that work too."""
        now = self.clock() if now_ts is None else now_ts
        batches = self.batcher.first_tier(now, self._premium_hold())
        self._publish(batches, now)
        return len(batches)

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
        self.link.retry_now()  # shutting down: try the broker once more now
        self.link.replay(now)
        rest = self.batcher.drain()
        self._publish(rest, now)
        self.held_copies.flush(now)
        self.link.flush_publisher()
        self.tally.send_counts(now)
        self.tally.send_letters()
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
        return self.link.degraded

    def _place(
        self, reg: Registry, rows: npt.NDArray[np.int64]
    ) -> tuple[npt.NDArray[np.integer], npt.NDArray[np.integer]]:
        tier = reg.tier[rows]
        placed = self._guarded(self.placer, reg, rows)
        # Health cannot be read: the home region is always within residency.
        return (reg.home_region[rows] if placed is None else placed), tier  # type: ignore[return-value]

    def _guarded(self, fn: Callable[..., object], *args: object) -> object | None:
        return self.link.guarded(fn, *args)

    def _publish(self, batches: list[Batch], now: float) -> None:
        self.link.publish(batches, now)
