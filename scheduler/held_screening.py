"""Screening of readings held back by admission control: its budget, and what it picks.

A reading pushed back (or held by its gateway behind older held ones) waits for
routine processing, and used to wait for screening too, so its detection latency grew
with the overload. It is screened at once instead, from a budget of its own: each
routine reading a region's workers drain (measured by the admission gate,
``follow_drain``; each admitted one until the drain is measured) earns ``per_admitted``
readings of screening while held, and ``PER_UNSCREENED`` more in the share of admitted
readings screened at admission (that screening is on routine's side of the slot time).
So screening of held readings takes a bounded share of the region's slot time (its
queue, ``{region}.screen``, ranks below premium either way), whatever admission does:

    share = per_admitted * screen_cost / (per_admitted * screen_cost + routine_cost)

``bench/screen_cost.py`` measures screening at 1.7-2 times routine processing's cost per
reading for copies with one reading per device: with the detector step compiled
(``scheduler.detector_kernel``, 0.13-0.14 us a reading) screening is mostly the detector
states' MGET and MSET, so held copies, coalesced to several readings per device
(``ingest.held_coalescer``), cost less per reading. The ratio is
taken at 1:1 until the workers' service is measured, then followed
(``HeldScreenBudget.follow_cost``, from ``scheduler.screen_cost``).
Screening every held reading fits the budget up to about 2x capacity (``HELD_SCREEN_SHARE``),
so past the budget (once a held reading would wait longer for credit than for
admission) a sample of devices is screened while held: a fixed share of each
region's devices (picked by a hash of the id, so the same devices keep fast detection),
whole devices only, so every device's readings reach screening complete and in time
order (a device screened in part would show the detector gaps, i.e. false dropouts).
Copies go to the broker only as fast as they are earned (``may_send``): the queue ranks
above standard processing, so what the budget does not pay for would take routine's slot
time. The share follows the budget over a window, not each gateway lump: a device dropped from
the sample rejoins only after its older held readings are admitted (its newer ones must
not overtake them; ``ingest.held_rejoin``), so it is not dropped for a lump larger than
the moment's credit. The other devices' readings are screened when admitted, as before.
A reading is screened once: early, or when admitted, never both.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from scheduler import defaults

#: Share of a region's non-premium slot time screening of held readings may take: nine
#: tenths, because a reading screened while held is not screened again when admitted, so
#: this moves screening earlier rather than adding work, and standard detection (5 s) is
#: a hard bound where standard processing has none (routine keeps a tenth, so its wait
#: stays bounded). At 2x capacity nearly every standard reading is held, and screening
#: them all takes 2 x s / (r + s) of the slot at screening cost s and routine cost r per
#: reading: 0.89 at the measured s = 0.8 r. At four fifths the held readings waited for
#: credit longer every second (traced at 1.9x: their age at screening grew from 0.9 s to
#: 3.4 s over 18 s; standard detection p99 5.1-8.2 s at 2.0-2.05x, 2.6 s with nine
#: tenths and denser copies, ``defaults.HELD_SCREEN_MAX_READINGS``). At two thirds, 1.8x
#: capacity left 514 of 869 standard alerts to screening at admission, 10 s late.
HELD_SCREEN_SHARE = 0.9
#: Screening's cost per reading over routine processing's until the workers' service
#: is measured (``scheduler.screen_cost``), for held readings coalesced per device
#: (``defaults.HELD_SCREEN_MAX_READINGS``): a device's readings share one fetch and
#: store of its state, most of screening's cost.
SCREEN_TO_ROUTINE_COST = 1.0


def per_admitted(cost_ratio: float) -> float:
    """Readings screened while held per non-premium reading admitted, for the share above
    at ``cost_ratio`` (screening's cost per held reading over routine's). (Rounded:
    1.9999999999999998 would shrink the sample for a load it exactly pays for.)"""
    if cost_ratio <= 0:
        raise ValueError(f"cost ratio must be positive, got {cost_ratio}")
    return round(HELD_SCREEN_SHARE / (1.0 - HELD_SCREEN_SHARE) / cost_ratio, 9)


#: Readings screened while held per non-premium reading admitted, before any measurement.
PER_ADMITTED = per_admitted(SCREEN_TO_ROUTINE_COST)
#: Readings screened while held earned, on top of ``per_admitted``, by each admitted reading
#: that was not screened while held: its screening copy (sent at admission, ranked with
#: held copies on ``{region}.screen``) takes routine's side of the slot time too, at about
#: a held reading's cost (both about one reading per device per copy; held copies are
#: denser, so this errs low). Without it the budget shrank with its own sample: fewer
#: devices screened while held, more admitted readings screened at admission, fewer
#: admitted in the same slot time, less earned, a smaller sample (measured: shares
#: 0.37-0.57 at 1.75x capacity, standard detection p50 17 s).
PER_UNSCREENED = round(HELD_SCREEN_SHARE / (1.0 - HELD_SCREEN_SHARE), 9)
#: Earning and spending are compared over this long (seconds): a few gateway lumps and
#: admission rounds, short enough to follow a change of drain within seconds.
BUDGET_WINDOW_S = 2.0
#: The sample shrinks at most this much per adjustment, and grows back by at most this
#: factor while spending stays under ``GROW_BELOW`` of the earning: by the square root of
#: earning over spending both ways, half the step that would match them. At a held share
#: of nine tenths routine keeps a tenth of the slot, so its admissions, and with them the
#: earning, move about ten times as far as the sample does, and a full step overshot:
#: under a steady 3.2x overload in the slot model of ``tests/core/test_held_screening.py``
#: the sample swung between 0.36 and 0.81 of the devices (0.54-0.60 with half steps).
#: (Growing only under half the earning made the sample a ratchet: a lump of spending
#: shrank it, and at any share between half and all of what the budget pays it never grew.)
MAX_SHRINK = 0.5
GROW = 1.25
GROW_BELOW = 0.9
#: ... by at least this share of the devices: halved at every adjustment of a long
#: overload, a sample reached 0 and multiplying could not bring it back (measured: every
#: region's share 0.0 at the end of `bench --rate-rps 250000`).
GROW_STEP = 0.05
#: The sample is resized at most once per this share of the window: gateways hand over
#: held readings in lumps, and admission opens and closes within a window.
ADJUST_EVERY = 0.5
#: A region whose drain is followed (``follow_drain``) is judged only after a window of
#: it measured above zero, or this many windows after it first earned or spent, if its
#: drain is never measured (workers gone): the budget must not wait for ever.
UNMEASURED_WINDOWS = 2.0
#: Longest a held reading taken on by the sample may wait for credit before the sample
#: shrinks (seconds): the detection bound less what comes after the credit (the copy's
#: coalescing, half a second, and a second for its queue, its screening and the alert).
#: A reading waiting for credit is screened late by its wait; a device dropped from the
#: sample is screened only when admitted and rejoins only after its held backlog, so the
#: rest of the overload (8-10 s late at 2x). Shrinking once a window's earning waited
#: (2 s) dropped 41-42 % of the devices 2.2 s into a 2x run, on a drain still rising
#: from the workers' start; the earning passed the spending a second later and rose to
#: two to three times it.
MAX_CREDIT_WAIT_S = defaults.DETECTION_BOUND_S - defaults.HELD_COALESCE_MAX_AGE_MS / 1000.0 - 1.0
#: Device order values span the uint64 range: order / ORDER_SPAN is in [0, 1).
ORDER_SPAN = float(2**64)


@dataclass
class HeldScreenBudget:
    """Per region code, the share of devices screened while held, sized to the budget.

    Admissions earn ``per_admitted`` readings each (``PER_UNSCREENED`` more for one not
    screened while held); screening spends them, when the sample takes readings on. Both
    are summed over a fading window; at a spend, at most every ``ADJUST_EVERY`` window, a
    region whose spending ran past its earning shrinks its sample toward it, and one
    spending under ``GROW_BELOW`` of it grows the sample toward it (devices rejoin
    once their older held readings are admitted).
    """

    per_admitted: float = PER_ADMITTED
    window_s: float = BUDGET_WINDOW_S
    _earned: dict[int, float] = field(default_factory=dict)
    _spent: dict[int, float] = field(default_factory=dict)
    #: Earned and not yet sent to the broker (``sent``): pacing, not sizing. Not faded
    #: (a fading sum let a copy overdraw it at every turn: 25 % over the earning), but
    #: capped at what the window earned, so an idle region does not hoard it.
    _balance: dict[int, float] = field(default_factory=dict)
    #: Non-premium readings admitted, and those of them not screened while held.
    _admitted: dict[int, float] = field(default_factory=dict)
    _unscreened: dict[int, float] = field(default_factory=dict)
    #: Routine readings each region drains per second, as last measured (``follow_drain``).
    _drain_rps: dict[int, float] = field(default_factory=dict)
    _share: dict[int, float] = field(default_factory=dict)
    _at_ts: dict[int, float] = field(default_factory=dict)
    _resized_ts: dict[int, float] = field(default_factory=dict)
    #: When each region first earned or spent: its sample is not resized before a
    #: window of evidence.
    _since_ts: dict[int, float] = field(default_factory=dict)
    #: When each region's drain was first measured above zero, once drains are followed.
    _drained_ts: dict[int, float] = field(default_factory=dict)
    #: When each region's followed drain last read above zero.
    _last_drained_ts: dict[int, float] = field(default_factory=dict)
    _follows_drain: bool = False
    #: Per region, the smallest share its sample reached, and when it first shrank: a
    #: run's detection latency turns on whether its sample ever shrank (a dropped
    #: device is screened only when admitted until its held backlog is in), which the
    #: share at the end does not say.
    _lowest_share: dict[int, float] = field(default_factory=dict)
    _first_shrink_ts: dict[int, float] = field(default_factory=dict)
    #: Per region, (first-offer age of the oldest reading admitted, when): what a device
    #: dropped from the sample would wait for screening (``admission_lag_s``).
    _admission_lag: dict[int, tuple[float, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.per_admitted < 0 or self.window_s <= 0:
            raise ValueError(f"need per_admitted >= 0 and window_s > 0, got {self}")

    def earn(
        self,
        region: int,
        admitted: int,
        now_ts: float,
        unscreened: int = 0,
        oldest_offered_ts: float | None = None,
    ) -> None:
        """``admitted`` non-premium readings of ``region`` were admitted at ``now_ts``, of
        which ``unscreened`` were not screened while held (they are screened now). They
        earn while the region's drain is not measured; once it is, the drain earns.
        ``oldest_offered_ts``: when the oldest of them was first offered (None: unknown),
        so how long a reading waits to be admitted now (``admission_lag_s``)."""
        if admitted > 0:
            if oldest_offered_ts is not None:
                self._admission_lag[region] = (max(0.0, now_ts - oldest_offered_ts), now_ts)
            self._fade(region, now_ts)
            self._admitted[region] += admitted
            self._unscreened[region] += unscreened
            if region not in self._drain_rps:
                self._credit(region, self._per_routine(region) * admitted)

    def follow_drain(self, drain_rps: Sequence[float] | None) -> None:
        """Routine readings each region (by code) drains per second, as measured now (None:
        not measured). Each drained reading earns what an admitted one would, from now on.

        Admissions follow the drain on average, but not while a region is closed: a
        backlog built before the drain was measured (a run's first seconds) kept every
        region closed for seconds while its workers drained it, nothing was earned, and
        the sample shrank to nothing (measured at 250,000/s: every share below 0.01 after
        8 s closed). The workers' drain goes on meanwhile, and it is what the slot time
        routine takes is made of."""
        if drain_rps is None:
            self._drain_rps.clear()
            return
        self._follows_drain = True
        self._drain_rps = {code: max(0.0, rps) for code, rps in enumerate(drain_rps)}

    def _per_routine(self, region: int) -> float:
        """Readings of held screening one routine reading earns: ``per_admitted``, plus
        ``PER_UNSCREENED`` for the share of admitted readings screened at admission."""
        admitted = self._admitted.get(region, 0.0)
        unscreened = self._unscreened.get(region, 0.0) / admitted if admitted > 0 else 1.0
        return self.per_admitted + PER_UNSCREENED * unscreened

    def follow_cost(self, cost_ratio: float) -> None:
        """Screening's cost per held reading over routine's, as measured now: admissions
        earn in inverse proportion from now on, so held screening keeps its share of slot
        time whatever the fleet's readings per device per copy."""
        self.per_admitted = per_admitted(cost_ratio)

    def may_send(self, region: int, now_ts: float) -> bool:
        """Whether the region's held copies may go to the broker now: what went over the
        window is within what admissions earned (the copy going may overdraw it once).

        Sizing the sample alone did not bound the work: copies queue on
        ``{region}.screen``, above standard processing, so a sample larger than the
        budget for a few seconds (the first window, a lump) took the whole slot, routine
        drain stopped, admission closed, nothing was earned and the sample shrank to
        nothing (measured at 250,000/s: every share below 0.01 within 10 s). Paced, held
        screening queued ahead of standard stays within its share of the slot time, and
        a copy that waits grows denser (cheaper per reading)."""
        self._fade(region, now_ts)
        return self._balance.get(region, 0.0) >= 0.0

    def balance(self, region: int) -> float:
        """Readings of held copies earned and not yet sent (as of the last ``may_send``):
        how much one send may take."""
        return self._balance.get(region, 0.0)

    def sent(self, region: int, readings: int, now_ts: float) -> None:
        """``readings`` of the region went to the broker as held copies."""
        self._fade(region, now_ts)
        self._balance[region] = self._balance.get(region, 0.0) - readings

    def share(self, region: int) -> float:
        """Share of the region's devices screened while held (1.0 until spending outruns
        earning)."""
        return self._share.get(region, 1.0)

    def admission_lag_s(self, region: int, now_ts: float) -> float:
        """How long the region's readings wait to be admitted now: the first-offer age of
        the oldest reading last admitted, grown by the time since (a region admitting
        nothing holds its readings longer every second); 0.0 when never told, and when
        the region's followed drain has read zero for ``UNMEASURED_WINDOWS`` windows (its
        workers gone: nothing will be admitted or earned, and the sample shrinks as it
        did before, so its copies waiting for credit stop growing)."""
        lag = self._admission_lag.get(region)
        if lag is None:
            return 0.0
        if self._follows_drain:
            drained = self._last_drained_ts.get(region, float("-inf"))
            if now_ts - drained > UNMEASURED_WINDOWS * self.window_s:
                return 0.0
        lag_s, at_ts = lag
        return lag_s + max(0.0, now_ts - at_ts)

    def lowest_share(self, region: int) -> float:
        """The smallest share of the region's devices its sample has had (1.0: never shrank)."""
        return self._lowest_share.get(region, 1.0)

    def first_shrink_ts(self, region: int) -> float | None:
        """When the region's sample first shrank (None: never)."""
        return self._first_shrink_ts.get(region)

    def spend(
        self,
        region: int,
        readings: int,
        now_ts: float,
        waiting: float = math.inf,
        oldest_wait_s: float = math.inf,
    ) -> None:
        """The sample took ``readings`` on (their copies go now or coalescing, paced by
        ``may_send``); resizes the region's sample. ``waiting``: the region's readings
        taken on and still waiting to go; ``oldest_wait_s``: how long the oldest of them
        has waited (unknown: as if more than any, and as long as any).

        Spending past the earning shrinks the sample only once what waits for credit
        would wait longer than ``MAX_CREDIT_WAIT_S`` at the window's rate of earning: a
        reading taken on is screened within standard detection's bound until then, while a device
        dropped from the sample is screened only when admitted (at 1.8x capacity, 10 s
        later) and rejoins only after its held backlog (the rest of a short overload).
        Shrinking at the first overspend dropped devices for lumps the next second's
        credit paid (measured at 1.8x: shares 0.11-0.35 within 8 s).

        And only once the oldest of them has waited ``MAX_CREDIT_WAIT_S`` in fact: the
        window's earning says what the next seconds pay only while the region's routine
        drain is steady. In a run's first seconds the work queued above routine (the
        first admissions' screening, the first held copies) holds the drain near zero
        for one to four seconds, the window earns little, and a wait foreseen from it
        (5.2 s, logged at 2.5x capacity) halved the sample 2.3 s into the run, though
        the drain rose 0.15 s later; its dropped devices were screened only when
        admitted, 12-14 s late (standard detection p99 14.1 s). Judged on the real wait,
        runs at 2.04-2.19x never shrank (in the two logged, no reading waited more than
        2.78 s).

        And only once that wait is also longer than the region's readings wait to be
        admitted (``admission_lag_s``): a device dropped from the sample is screened
        when admitted, so until then dropping it makes its detection later, not sooner,
        and the sample's p99 is the dropped devices' (a share of 0.76 is a quarter of the
        readings). Sustained 20 s at 1,000,000/s (1.94x and 2.22x this run's drain) the
        samples shrank at 13.6-15.9 s, standard detection p99 18,885.8 and 24,103.6 ms,
        the dropped devices' readings screened at admission 16.9-20.9 s (p50) after they
        were first offered; with this rule none shrank, and the held readings waiting for
        credit (every device's, in order) made detection later evenly: p99 1,815.72 and
        9,084.39 ms (1.66x, 2.32x).
        The wait for admission grows with the overload (at 2x about a second a second),
        the wait for credit only with the budget's shortfall, so the sample shrinks
        when the shortfall is deep, not when it is a fraction."""
        self._fade(region, now_ts)
        self._spent[region] += readings
        if now_ts - self._evidence_ts(region) < self.window_s:
            # Held readings screened before the region's admissions (or its measured
            # drain) have earned for a window (a gateway behind from the start): a
            # shrink now would be judged on no evidence, and a dropped device rejoins
            # only after its held backlog.
            return
        if now_ts - self._resized_ts.get(region, float("-inf")) < ADJUST_EVERY * self.window_s:
            return
        self._resized_ts[region] = now_ts
        earned, spent, share = self._earned[region], self._spent[region], self.share(region)
        # What the balance does not pay for yet waits for credit: at the window's rate of
        # earning (earned / window_s), owed * window_s / earned seconds.
        owed = waiting - max(0.0, self._balance.get(region, 0.0))
        late = oldest_wait_s > max(MAX_CREDIT_WAIT_S, self.admission_lag_s(region, now_ts))
        if late and spent > earned and owed * self.window_s > MAX_CREDIT_WAIT_S * earned:
            factor = max(MAX_SHRINK, math.sqrt(earned / spent))
            self._share[region] = share * factor
            self._first_shrink_ts.setdefault(region, now_ts)
            self._lowest_share[region] = min(self.lowest_share(region), self._share[region])
            # Judged once: the window's spending is restated as at most its earning, so
            # later adjustments judge only what the shrunk sample spends. Left as it was,
            # one lump (a gateway's first seconds of held readings) stayed in the window
            # for seconds and shrank the sample again at every adjustment (measured at
            # 450,000/s: 1.0, 0.5, 0.27, 0.18 ... 0.11 within 8 s), and a dropped device
            # rejoins only after its held backlog is admitted, so each of those shrinks
            # held for the rest of the overload.
            self._spent[region] = min(spent * factor, earned)
        elif spent < GROW_BELOW * earned:
            # At least GROW_STEP more: a sample halved to nothing would stay there.
            grow = GROW if spent <= 0 else min(GROW, math.sqrt(earned / spent))
            self._share[region] = min(1.0, max(share * grow, share + GROW_STEP))

    def _evidence_ts(self, region: int) -> float:
        """Since when the region's earning says what its workers drain.

        A followed drain counts from its first measurement above zero: in a run's first
        seconds the workers are still starting and screening the first copies, the
        drain reads 0-12,000/s where it settles at 100,000-250,000/s, and a sample
        judged on that halved at 2 s (measured at 450,000/s) and stayed halved, its
        dropped devices screened only when admitted, 10 s later."""
        since = self._since_ts[region]
        if not self._follows_drain:
            return since
        cap = since + UNMEASURED_WINDOWS * self.window_s
        return min(self._drained_ts.get(region, cap), cap)

    def _credit(self, region: int, readings: float) -> None:
        self._earned[region] += readings
        balance = self._balance.get(region, 0.0) + readings
        self._balance[region] = min(balance, self._earned[region])

    def _fade(self, region: int, now_ts: float) -> None:
        self._since_ts.setdefault(region, now_ts)
        elapsed = max(0.0, now_ts - self._at_ts.get(region, now_ts))
        fade = math.exp(-elapsed / self.window_s)
        drained = self._drain_rps.get(region, 0.0) * elapsed
        if self._drain_rps.get(region, 0.0) > 0:
            self._drained_ts.setdefault(region, now_ts)
            self._last_drained_ts[region] = now_ts
        self._earned[region] = self._earned.get(region, 0.0) * fade
        if drained > 0:
            self._credit(region, self._per_routine(region) * drained)
        self._admitted[region] = self._admitted.get(region, 0.0) * fade
        self._unscreened[region] = self._unscreened.get(region, 0.0) * fade
        self._spent[region] = self._spent.get(region, 0.0) * fade
        self._at_ts[region] = now_ts


def device_order(device_id: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """A fixed pseudo-random order of devices (a multiplicative hash of the id): past the
    budget the same devices keep being screened while held, so none is left with gaps."""
    return np.asarray(device_id, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)


def in_sample(order: npt.NDArray[np.uint64], share: float) -> npt.NDArray[np.bool_]:
    """Which devices (``order``, from ``device_order``) are in a sample of ``share``: those
    within the first ``share`` of the order's range.

    Whole devices, never part of one: a device whose held readings were screened only in
    part would show the detector a gap (a false dropout), and its skipped readings could
    not be screened later without going back in time. The screener takes part only with
    the devices of the sample that are clean (none of their readings waiting unscreened).
    """
    if share >= 1.0:
        return np.ones(order.shape, dtype=np.bool_)
    return order < np.uint64(max(0.0, share) * ORDER_SPAN)
