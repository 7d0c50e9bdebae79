"""Screening of readings held back by admission control, at once, for the producer.

The producer hands over the readings it pushes back (and those a gateway holds itself,
``Producer.screen_held``); this sends screening copies of them within the region's
budget (``scheduler.held_screening``), and tells the producer which readings it admits
later were screened already (``ingest.screened_marks``), so none is screened twice.
Picked readings are coalesced per region before they go (``ingest.held_coalescer``): a
denser copy costs less per reading, and the budget follows the measured cost.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from ingest.held_coalescer import HeldCoalescer, in_time_order
from ingest.held_rejoin import RejoinBuffer
from ingest.screened_marks import ScreenedMarks
from scheduler.held_screening import HeldScreenBudget, device_order, in_sample
from scheduler.model import Batch
from scheduler.registry import Registry

F64 = npt.NDArray[np.float64]
#: Sends screening copies; True when they went out.
SendCopies = Callable[[list[Batch]], bool]
#: Called before a region's held readings are screened: its admitted readings still
#: buffered must reach screening first (a device's readings are screened in time order).
BeforeRegion = Callable[[int], None]
#: Rejoining devices' kept readings are looked at most this often (seconds): finding
#: those ready goes through every kept reading of the region, and devices finish their
#: held backlog one admission call after another.
REJOIN_CHECK_S = 0.1


class HeldScreener:
    def __init__(
        self,
        registry: Registry,
        producer_id: str,
        metrics: tuple[str, ...],
        budget: HeldScreenBudget | None = None,
    ) -> None:
        self.budget = budget or HeldScreenBudget()
        self.marks = ScreenedMarks(registry)
        self.rejoin = RejoinBuffer(len(registry))
        self.coalescer = HeldCoalescer(len(registry))
        #: A rejoining device had readings admitted since ``rejoined`` last looked.
        self._rejoin_due = False
        self._rejoin_next_ts = float("-inf")
        self._registry = registry
        self._producer_id = producer_id
        self._metrics = metrics
        self._copies = 0

    def rebind(self, registry: Registry) -> None:
        if registry is not self._registry:
            # Kept readings of rejoining devices are let go: they wait unscreened, as if
            # never kept, and are screened when admitted.
            for rows, _, t, _, _ in self.rejoin.drop_all():
                self.marks.held_unscreened(rows, t)
            self.rejoin = RejoinBuffer(len(registry))
            self.coalescer.rebind(registry)
        self._registry = registry
        self.marks.rebind(registry)

    def admitted(
        self,
        rows: npt.NDArray[np.int64],
        ts: F64,
        region: npt.NDArray[np.integer],
        now: float,
        send: SendCopies | None,
        before_region: BeforeRegion,
        offered_ts: F64 | None = None,
    ) -> npt.NDArray[np.bool_]:
        """Non-premium readings admitted to routine processing: they earn their region's
        budget, those not screened while held more (they are screened now, on routine's
        side of the slot time). Returns which of them were screened while held (no copy
        again). ``send``/``before_region``: how coalesced copies go out now (``poll``).
        ``offered_ts``: when each was first offered, so the budget knows how long a
        region's readings wait to be admitted (None: unknown)."""
        screened = self.marks.screened(rows, ts)
        n_regions = len(self._registry.topology.regions)
        codes = region.astype(np.intp)
        counts = np.bincount(codes, minlength=n_regions)
        unscreened = np.bincount(codes[~screened], minlength=n_regions)
        present = np.flatnonzero(counts).tolist()
        for code in present:
            oldest = None
            if offered_ts is not None:
                oldest = float(
                    offered_ts.min() if len(present) == 1 else offered_ts[codes == code].min()
                )
            self.budget.earn(code, int(counts[code]), now, int(unscreened[code]), oldest)
        overtaking = ~screened & self.coalescer.holds(rows)
        if overtaking.any():
            # A device's newer reading, screened at admission, must not reach screening
            # before its readings still coalescing here: those go first, theirs only (the
            # whole region's could be seconds of slot time, past its pace). When they
            # cannot go (broker down), the newer reading overtakes.
            for code in np.unique(codes[overtaking]).tolist():
                devices = np.unique(rows[overtaking & (codes == code)])
                if send is None or not self._send_region(code, now, send, before_region, devices):
                    break
        self.marks.admitted(rows, ts)
        # Only a rejoining device clean now has kept readings to screen.
        rejoining = rows[self.rejoin.rejoining[rows]]
        self._rejoin_due |= bool(self.marks.clean(rejoining).any())
        return screened

    def screen(
        self,
        cols: tuple[npt.NDArray[np.int64], npt.NDArray[np.uint64], F64, F64],
        region: npt.NDArray[np.integer],
        tier: npt.NDArray[np.integer],
        now: float,
        send: SendCopies | None,
        before_region: BeforeRegion,
    ) -> int:
        """Screen held readings (registry rows, ids, event times, values) per region within
        its budget; ``send`` None: none can be sent now. Returns the readings picked (sent
        now or coalescing, ``poll``). The columns may be kept as they are (not copied):
        the caller must not change them afterwards."""
        sent = 0
        # Rows gathered by index, never by boolean mask: a mask as scattered as regions
        # and sampled devices are costs numpy about ten times as much per column.
        codes = region.astype(np.intp, copy=False)
        regions = np.flatnonzero(np.bincount(codes)).tolist()
        every = (*cols, tier)
        for code in regions:
            mine = every if len(regions) == 1 else _gather(every, np.flatnonzero(codes == code))
            new = np.flatnonzero(~self.marks.screened(mine[0], mine[2]))
            if new.size < mine[0].size:
                mine = _gather(mine, new)
            r, t = mine[0], mine[2]
            if send is None:
                # None can go: all waits unscreened, its devices taking no part until admitted.
                self.marks.held_unscreened(r, t)
                continue
            kept_before = self.rejoin.size
            clean = self.marks.clean(r) & ~self.rejoin.rejoining[r]
            sample = in_sample(device_order(mine[1]), self.budget.share(code))
            picked = clean & sample
            # In the sample but not clean: it rejoins (ingest.held_rejoin).
            kept = self.rejoin.keep(code, mine, sample & ~clean)  # type: ignore[arg-type]
            pick = np.flatnonzero(picked)
            chosen = mine if pick.size == r.size else _gather(mine, pick)
            # Readings kept for rejoining devices are spent now, when the sample takes
            # them on, not when they go out in one lump after their devices' older
            # readings (such a lump, up to HELD_REJOIN_MAX_READINGS, can outrun a
            # window's earning and halve the sample). Spent even when nothing is: a
            # sample shrunk to nothing must still be reviewed (resizes happen at spends).
            spent = self.rejoin.size - kept_before + int(pick.size)
            self.coalescer.add(code, chosen, now)  # type: ignore[arg-type]
            self.marks.sent_to_screening(chosen[0], chosen[2])
            sent += int(pick.size)
            oldest_ts = self.coalescer.oldest_ts(code)
            self.budget.spend(
                code,
                spent,
                now,
                self.coalescer.size_of(code),
                0.0 if oldest_ts is None else now - oldest_ts,
            )
            # What was not sent (or kept) waits unscreened: its device takes no part until
            # admitted.
            rest = np.flatnonzero(~(picked | kept))
            self.marks.held_unscreened(r[rest], t[rest])
        self.poll(now, send, before_region)
        return sent

    def rejoined(self, now: float, send: SendCopies | None, before_region: BeforeRegion) -> int:
        """Screen what rejoining devices kept once their older held readings are all
        admitted (call after those readings reached the batcher), and send coalesced
        copies that are due (``poll``); returns the readings picked."""
        picked = 0
        if send is not None and self._rejoin_due and now >= self._rejoin_next_ts:
            self._rejoin_due = False
            self._rejoin_next_ts = now + REJOIN_CHECK_S
            for code in self.rejoin.regions():
                ready = self.rejoin.ready(code, self.marks)
                if ready is None:
                    continue
                # Spent when kept (``screen``), not again now.
                self.coalescer.add(code, ready, now)
                self.marks.sent_to_screening(ready[0], ready[2])
                picked += int(ready[0].size)
        self.poll(now, send, before_region)
        return picked

    def poll(self, now: float, send: SendCopies | None, before_region: BeforeRegion) -> None:
        """Send the coalesced copies that reached their size or age limit, as far as
        their region's budget paces them (``HeldScreenBudget.may_send``)."""
        for code in self.coalescer.due(now):
            if not self.budget.may_send(code, now):
                continue
            # What the balance pays, at least one full copy: the whole region's kept
            # readings at once (650,000 measured after a few seconds paced) queued ahead
            # of standard processing for seconds, its drain stopped, nothing was earned
            # and the sample shrank to nothing.
            limit = max(self.coalescer.max_readings, int(self.budget.balance(code)))
            if send is None or not self._send_region(code, now, send, before_region, limit=limit):
                return

    def flush(self, now: float, send: SendCopies | None, before_region: BeforeRegion) -> None:
        """Send every coalesced copy, paced or not (shutdown, end of a run); kept when
        they cannot go."""
        for code in self.coalescer.regions():
            if send is None or not self._send_region(code, now, send, before_region):
                return

    def next_due_ts(self) -> float | None:
        """When a coalesced copy is next due on age (None: none waits)."""
        return self.coalescer.next_due_ts()

    def _send_region(
        self,
        code: int,
        now: float,
        send: SendCopies,
        before_region: BeforeRegion,
        devices: npt.NDArray[np.int64] | None = None,
        limit: int | None = None,
    ) -> bool:
        """Send the region's coalesced readings (``devices``' only, when given; the oldest
        ``limit``, when given) as screening copies, one per tier, after its admitted
        readings still buffered; True when sent (else they stay)."""
        _, dev, t, v, tier = self.coalescer.peek(code, devices, limit)
        before_region(code)
        tiers = np.flatnonzero(np.bincount(tier.astype(np.intp, copy=False))).tolist()
        copies = [
            self._copy(code, k, dev[part], t[part], v[part], now)
            for k in tiers
            for part in (slice(None) if len(tiers) == 1 else np.flatnonzero(tier == k),)
        ]
        if not send(copies):
            return False
        self.coalescer.taken(code, devices, limit)
        self.budget.sent(code, int(t.size), now)
        return True

    def _copy(
        self, region: int, tier: int, dev: npt.NDArray[np.uint64], t: F64, v: F64, now: float
    ) -> Batch:
        """A screening copy of held readings of one (region, tier), oldest first (it may
        travel in pieces, each screened after the one before)."""
        # Coalesced copies come sorted already (``HeldCoalescer.peek``): no sort then.
        order = slice(None) if in_time_order(t) else np.argsort(t, kind="stable")
        topology = self._registry.topology
        self._copies += 1
        region_name, tier_name = topology.regions[region], topology.tiers[tier]
        return Batch(
            f"{self._producer_id}:{region_name}:{tier_name}:held{self._copies}",
            region_name,
            tier_name,
            self._metrics,
            dev[order],
            t[order],
            v[order],
            np.full(t.size, now),
        )


def _gather(
    cols: tuple[npt.NDArray[Any], ...], index: npt.NDArray[np.intp]
) -> tuple[npt.NDArray[Any], ...]:
    """The rows ``index`` of every column."""
    return tuple(c[index] for c in cols)
