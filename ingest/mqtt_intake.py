"""Intake: runs of MQTT messages offered to one producer, and each message settled.

A run is decoded (``ingest.mqtt_payload``) and its readings offered to the producer
together. A message whose readings were all taken (accepted, or dead-lettered with their
reason) is due for acknowledgement; one with readings ingest pushed back (non-premium,
region past its backlog budget) or the bridge deferred waits for the cycle's parking
write (``ingest.mqtt_parking``), and is acknowledged once it succeeded; without a
parked-readings store, or while Redis cannot take the write, it is held in the bridge
with just those readings, unacknowledged (``ingest.mqtt_held``).

What the producer publishes at an ack round covers exactly the acknowledgements its
intake made due.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from ingest.mqtt_client import Received
from ingest.mqtt_held import Held, MessageRun, PushedBack
from ingest.mqtt_parking import Parking, deferrable
from ingest.mqtt_payload import decode_messages
from ingest.producer import IngestResult, Producer
from scheduler.model import DeadLetter
from scheduler.registry import Registry

#: Told the (tagged packet id, QoS) of messages due for acknowledgement.
AckSink = Callable[[list[tuple[int, int]]], None]

#: What an ingest call that took nothing pushed back: nothing.
_NOTHING_BACK = IngestResult(0, 0, {})
_NONE = np.empty(0, dtype=np.intp)


@dataclass
class BridgeStats:
    messages: int = 0
    readings_offered: int = 0
    accepted: int = 0
    rejected: int = 0
    pushed_back: int = 0
    acked: int = 0
    started_ts: float = field(default_factory=time.time)


class Intake:
    def __init__(
        self,
        producer: Producer,
        ack: AckSink,
        clock: Callable[[], float],
        registry: Callable[[], Registry] | None = None,
        parking: Parking | None = None,
    ) -> None:
        """``ack``: where messages due for acknowledgement go; ``registry``: tells which
        deferred rows may be parked unoffered; ``parking``: where pushed-back rows go (None:
        held in the bridge)."""
        self.producer = producer
        self.ack = ack
        self.clock = clock
        self.registry = registry
        self.parking = parking
        self.stats = BridgeStats()
        self.held = Held()
        #: Runs with rows to park, and those rows: parked together at the cycle's end.
        self._pending: list[tuple[MessageRun, PushedBack]] = []

    def offer(self, received: list[Received], behind: bool = False) -> None:
        """Decode a run of messages and offer their readings. While ``behind``, gateway
        messages' non-premium rows of known devices are parked instead of offered: a single
        reading's topic names its device, so the inbox already takes premium ones first and
        deferring the rest would only add the parking round trip to their way."""
        now = self.clock()
        d = decode_messages(received, self.producer.limits, now)
        self.stats.messages += len(received)
        self.stats.readings_offered += d.readings
        ids = np.asarray(d.device_id, dtype=np.uint64)
        vals = np.array(d.columns, dtype=np.float64).T.reshape(len(ids), len(d.columns))
        owner = np.asarray(d.owner, dtype=np.intp)
        run = MessageRun(
            [(mid, qos) for _topic, _payload, mid, qos, _ct in received],
            owner, ids, np.asarray(d.ts, dtype=np.float64), vals, np.full(ids.size, now),
            d.others, d.other_owner,
        )  # fmt: skip
        deferred = None
        if behind and self.parking is not None and self.registry is not None and ids.size:
            later = np.asarray([b"/gateways/" in m[0] for m in received], dtype=bool)[owner]
            if later.any():
                deferred = deferrable(self.registry(), ids, later)
        self._ingest(run, d.letters, now, deferred=deferred)

    def offer_held(self, now: float) -> None:
        """Held readings (never premium) whose region takes readings again."""
        run = self.held.take_open(self.producer.closed(), now)
        if run is not None:
            self._ingest(run, [], now, again=True)

    def count(self, res: IngestResult) -> None:
        self.stats.accepted += res.accepted
        self.stats.rejected += res.rejected

    def _ingest(
        self,
        run: MessageRun,
        letters: list[DeadLetter],
        now: float,
        again: bool = False,
        deferred: tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]] | None = None,
    ) -> None:
        """A run's readings to ingest but the ``deferred`` rows (positions, regions), which
        are parked unoffered. ``again``: rows offered before, latency running from their
        ``offered_ts``."""
        take = None
        if deferred is not None and deferred[0].size:
            take = np.setdiff1d(np.arange(run.device_id.size), deferred[0])
        cols = [run.device_id, run.ts, run.values, run.offered_ts]
        ids, tss, vals, offered = cols if take is None else [c[take] for c in cols]
        res = self.producer.ingest_columns(
            ids, tss, vals, now_ts=now, extra_letters=letters, offered_ts=offered if again else None
        )
        self.count(res)
        res_o = _NOTHING_BACK
        if run.others:
            res_o = self.producer.ingest(run.others)
            self.count(res_o)
        self.stats.pushed_back += int(res.pushed_back_index.size + res_o.pushed_back_index.size)
        back_rows, row_regions = res.pushed_back_index, res.pushed_back_region
        if take is not None and deferred is not None:
            back_rows = np.concatenate((deferred[0], take[back_rows]))
            row_regions = np.concatenate((deferred[1], row_regions))
        back = PushedBack(back_rows, row_regions, res_o.pushed_back_index, res_o.pushed_back_region)
        if not back.rows.size and not back.others.size:
            self.ack(run.messages)
        elif back.rows.size and self.parking is not None:
            self._pending.append((run, back))
        else:
            self.ack(self.held.hold(run, back, now))

    def park_pending(self, now: float) -> None:
        """Park every row pushed back or deferred this cycle in one write; their messages
        are acknowledged once it succeeded, held in the bridge if it did not."""
        if not self._pending or self.parking is None:
            return
        pending, self._pending = self._pending, []
        rows = [(run, back.rows) for run, back in pending]
        parked = self.parking.park(
            np.concatenate([run.device_id[r] for run, r in rows]),
            np.concatenate([run.ts[r] for run, r in rows]),
            np.concatenate([run.values[r] for run, r in rows]),
            np.concatenate([run.offered_ts[r] for run, r in rows]),
            np.concatenate([back.row_regions for _run, back in pending]),
        )
        for run, back in pending:
            if parked:  # safe in the store: only others pushed back keep a message
                back = PushedBack(_NONE, _NONE, back.others, back.other_regions)
            if back.rows.size or back.others.size:
                self.ack(self.held.hold(run, back, now))
            else:
                self.ack(run.messages)
