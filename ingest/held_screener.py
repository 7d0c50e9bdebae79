"""Screening of readings held back by admission control, at once, for the producer.

The producer hands over the readings it pushes back (and those a gateway holds itself,
``Producer.screen_held``); this sends screening copies of them within the region's
budget (``scheduler.held_screening``), and tells the producer which readings it admits
later were screened already (``ingest.screened_marks``), so none is screened twice.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

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
        self._registry = registry
        self.marks.rebind(registry)

    def admitted(
        self,
        rows: npt.NDArray[np.int64],
        ts: F64,
        region: npt.NDArray[np.integer],
        now: float,
    ) -> npt.NDArray[np.bool_]:
        """Non-premium readings admitted to routine processing: they earn their region's
        budget. Returns which of them were screened while held (no copy again)."""
        n_regions = len(self._registry.topology.regions)
        counts = np.bincount(region.astype(np.intp), minlength=n_regions)
        for code in np.flatnonzero(counts).tolist():
            self.budget.earn(code, int(counts[code]), now)
        self.marks.admitted(rows, ts)
        # Only a rejoining device clean now has kept readings to screen.
        rejoining = rows[self.rejoin.rejoining[rows]]
        self._rejoin_due |= bool(self.marks.clean(rejoining).any())
        return self.marks.screened(rows, ts)

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
        its budget; ``send`` None: none can be sent now. Returns the readings sent."""
        rows, dev, t, v = cols
        sent = 0
        for code in np.unique(region).tolist():
            mine = np.flatnonzero(region == code)
            mine = mine[~self.marks.screened(rows[mine], t[mine])]
            waiting = np.ones(mine.size, dtype=np.bool_)
            kept = np.zeros(mine.size, dtype=np.bool_)
            if send is not None:
                r = rows[mine]
                clean = self.marks.clean(r) & ~self.rejoin.rejoining[r]
                sample = in_sample(device_order(dev[mine]), self.budget.share(code))
                waiting[clean & sample] = False
                # In the sample but not clean: it rejoins (ingest.held_rejoin).
                held = (r, dev[mine], t[mine], v[mine], tier[mine])
                kept = self.rejoin.keep(code, held, sample & ~clean)
            pick = mine[~waiting]
            if pick.size:
                assert send is not None
                if self._send(
                    code, (dev[pick], t[pick], v[pick], tier[pick]), now, send, before_region
                ):
                    self.marks.sent_to_screening(rows[pick], t[pick])
                    sent += int(pick.size)
                else:
                    send = None
                    waiting[:] = True
            elif send is not None:
                # Nothing of the region screened: its sample is still reviewed, or one
                # shrunk to nothing would never be judged again (resizes happen at spends;
                # measured: every region's share 0.0 at the end of a 250,000/s run).
                self.budget.spend(code, 0, now)
            # What was not sent (or kept) waits unscreened: its device takes no part until
            # admitted.
            rest = mine[waiting & ~kept]
            self.marks.held_unscreened(rows[rest], t[rest])
        return sent

    def rejoined(self, now: float, send: SendCopies | None, before_region: BeforeRegion) -> int:
        """Screen what rejoining devices kept once their older held readings are all
        admitted (call after those readings reached the batcher); returns readings sent."""
        if not self._rejoin_due or now < self._rejoin_next_ts:
            return 0
        self._rejoin_due = False
        self._rejoin_next_ts = now + REJOIN_CHECK_S
        sent = 0
        for code in self.rejoin.regions():
            ready = self.rejoin.ready(code, self.marks)
            if ready is None:
                continue
            rows, dev, t, v, tier = ready
            if send is not None and self._send(code, (dev, t, v, tier), now, send, before_region):
                self.marks.sent_to_screening(rows, t)
                sent += int(rows.size)
                continue
            send = None
            self.marks.held_unscreened(rows, t)
        return sent

    def _send(
        self,
        code: int,
        cols: tuple[npt.NDArray[np.uint64], F64, F64, npt.NDArray[np.integer]],
        now: float,
        send: SendCopies,
        before_region: BeforeRegion,
    ) -> bool:
        """Send held readings of one region as screening copies, one per tier, after its
        admitted readings still buffered; True (and spent from its budget) when sent."""
        dev, t, v, tier = cols
        before_region(code)
        copies = [
            self._copy(code, k, dev[part], t[part], v[part], now)
            for k in np.unique(tier).tolist()
            for part in (tier == k,)
        ]
        if not send(copies):
            return False
        self.budget.spend(code, int(t.size), now)
        return True

    def _copy(
        self, region: int, tier: int, dev: npt.NDArray[np.uint64], t: F64, v: F64, now: float
    ) -> Batch:
        """A screening copy of held readings of one (region, tier), oldest first (it may
        travel in pieces, each screened after the one before)."""
        order = np.argsort(t)
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
