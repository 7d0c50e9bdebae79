"""Parking: where the MQTT bridge puts readings ingest pushed back, so it can ack them.

Pushed-back readings (non-premium, their region past its backlog budget) are parked in
the deployment's parked-readings store (``stores.parked_readings``), one batch per region
per bridge cycle in one round trip, and their MQTT messages are acknowledged once that
write succeeded. While a region takes readings again, its oldest parked batch is claimed
and offered to ingest with the time its readings were first offered; a claim ingest took
is marked done only after the producer published what it took (``published``), and what
ingest pushes back again goes back to the head of its region's list.

Every bridge holds a lease on its claims; it puts back its own claims when it starts (a
restart under the same client id) and dead bridges' claims while it runs.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import numpy.typing as npt

from ingest.producer import OUTAGE_ERRORS, IngestResult, Producer
from scheduler.registry import Registry
from stores.parked_readings import ParkedBatch, ParkedReadingsStore

logger = logging.getLogger(__name__)

#: Parked batches claimed per open region per offer: a batch is at most one bridge
#: cycle's pushed-back readings, so an offer stays short next to premium's budget.
PARKED_PER_REGION = 1
#: A bridge's lease on its claims, and how often it is renewed: a bridge silent for
#: longer is taken for dead, and its claims go back for the others.
LEASE_S = 30.0
RENEW_S = 5.0

_NOTHING = IngestResult(0, 0, {})


class Parking:
    def __init__(self, store: ParkedReadingsStore, consumer: str, regions: tuple[str, ...]) -> None:
        """``consumer``: this bridge's stable name (its MQTT client id); ``regions``: the
        topology's, in region-code order."""
        self.store = store
        self.consumer = consumer
        self.regions = regions
        self.parked = 0
        self.reoffered = 0
        #: Claimed batches ingest took: done once what it took is published.
        self._taken: list[ParkedBatch] = []
        #: Claimed batches (or the rest of one) ingest pushed back: to put back.
        self._back: list[ParkedBatch] = []
        self._lease_ts = float("-inf")

    def start(self) -> None:
        """Take the lease, and put back the claims of an earlier run under this name."""
        try:
            self._renew(own=True)
        except OUTAGE_ERRORS as exc:
            logger.warning("parked readings cannot be read at start: %s", exc)

    def park(
        self,
        ids: npt.NDArray[np.uint64],
        tss: npt.NDArray[np.float64],
        vals: npt.NDArray[np.float64],
        offered: npt.NDArray[np.float64],
        regions: npt.NDArray[np.intp],
    ) -> bool:
        """Park readings (``regions``: each one's region code); False if the store cannot
        take them now (the caller keeps them)."""
        batches = []
        for r in np.unique(regions).tolist():
            m = regions == r
            batches.append(ParkedBatch(self.regions[r], ids[m], tss[m], vals[m], offered[m]))
        try:
            self.store.park(batches)
        except OUTAGE_ERRORS as exc:
            logger.warning("pushed-back readings cannot be parked, holding them: %s", exc)
            return False
        self.parked += int(ids.size)
        return True

    def offer_again(self, producer: Producer, now: float) -> IngestResult:
        """Offer the oldest parked batch of each region that takes readings now."""
        closed = producer.closed()
        open_regions = [r for i, r in enumerate(self.regions) if closed is None or not closed[i]]
        try:
            self._renew()  # also while every region is closed: the lease covers claims held
            if not open_regions:
                return _NOTHING
            claimed = self.store.claim(self.consumer, open_regions, PARKED_PER_REGION)
        except OUTAGE_ERRORS as exc:
            logger.warning("parked readings cannot be read: %s", exc)
            return _NOTHING
        if not claimed:
            return _NOTHING
        res = producer.ingest_columns(
            np.concatenate([b.device_id for b in claimed]),
            np.concatenate([b.ts for b in claimed]),
            np.concatenate([b.values for b in claimed]),
            now_ts=now,
            offered_ts=np.concatenate([b.offered_ts for b in claimed]),
        )
        self.reoffered += sum(len(b) for b in claimed)
        back = res.pushed_back_index
        start = 0
        for b in claimed:
            mine = back[(back >= start) & (back < start + len(b))] - start
            start += len(b)
            if mine.size == len(b):
                self._back.append(b)
                continue
            self._taken.append(b)
            if mine.size:  # taken in part: the rest goes back as a batch of its own
                self._back.append(
                    ParkedBatch(
                        b.region, b.device_id[mine], b.ts[mine], b.values[mine], b.offered_ts[mine]
                    )
                )
        self._put_back()
        return res

    def published(self) -> None:
        """The producer published everything it held: claims ingest took are done."""
        if self._taken:
            try:
                self.store.done(self.consumer, self._taken)
                self._taken = []
            except OUTAGE_ERRORS as exc:  # still claimed: marked done at the next round
                logger.warning("parked readings cannot be marked done: %s", exc)
        self._put_back()

    def _put_back(self) -> None:
        if not self._back:
            return
        try:
            self.store.unclaim(self.consumer, self._back)
        except OUTAGE_ERRORS as exc:  # still claimed: put back at the next round
            logger.warning("parked readings cannot be put back: %s", exc)
            return
        self._back = []

    def _renew(self, own: bool = False) -> None:
        """Keep this bridge's lease and put back dead bridges' claims (``own``: its own)."""
        now = time.monotonic()
        if not own and now - self._lease_ts < RENEW_S:
            return
        self._lease_ts = now
        self.store.keep_alive(self.consumer, LEASE_S)
        self.store.rescue(self.consumer, self.regions, own=own)


def deferrable(
    registry: Registry, ids: npt.NDArray[np.uint64], later: npt.NDArray[np.bool_]
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Among rows marked ``later``, the non-premium readings of known devices, to park
    unoffered (positions), and their home regions, under which they are parked."""
    rows = registry.lookup(ids)
    park = np.flatnonzero(later & (rows >= 0) & (registry.tier[np.maximum(rows, 0)] > 0))
    return park, registry.home_region[rows[park]].astype(np.intp)
