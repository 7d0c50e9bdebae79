"""MqttBridge: devices and gateways in over MQTT, through the same producer as every ingest.

The bridge subscribes with MQTT v5 shared subscriptions (``$share/{group}/{filter}``)
so several bridge processes split one stream, at QoS 1 with manual acknowledgement:

- a message is acknowledged only once every reading it carries was taken by ingest
  (accepted, or dead-lettered with its reason) *and* the producer has published what
  it buffered (``Producer.flush`` before each round of acks), so a bridge killed at any
  point loses nothing: the broker redelivers what was not acknowledged. Delivery is
  at least once: readings flushed just before a crash are delivered again.
- readings ingest pushes back (``IngestResult.pushed_back_index``: non-premium readings
  of a region past its backlog budget) are parked in Redis (``ingest.mqtt_parking``, one
  write per cycle) and their messages acknowledged once that write succeeded, so the
  session's receive window stays open and premium messages never wait at the broker
  behind held standard ones. Without a parked-readings store, or while Redis cannot take
  the write, they stay with the bridge, their messages unacknowledged (``ingest.mqtt_held``).
- messages waiting in the bridge are taken premium devices' first (``Inbox``), and
  premium devices' own topics (``.../telemetry/premium``) come in on a connection of
  their own (``ingest.mqtt_lanes``), so at the broker too they never queue behind the
  standard stream; those that come in during a cycle are offered between its runs.

The session is persistent (``clean_start`` off, a session expiry) under a stable client
id, so a restarted bridge gets its unacknowledged messages back.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from ingest.mqtt_client import BrokerConfig, Received
from ingest.mqtt_held import PUSHED_BACK_WAIT_S, Held, MessageRun, PushedBack
from ingest.mqtt_inbox import Inbox
from ingest.mqtt_lanes import lanes_for
from ingest.mqtt_parking import Parking, deferrable
from ingest.mqtt_payload import decode_messages
from ingest.mqtt_receiver import Receiver
from ingest.producer import IngestResult, Producer
from scheduler.model import DeadLetter
from scheduler.registry import Registry
from stores.parked_readings import ParkedReadingsStore

DEFAULT_FILTERS = ("devices/+/telemetry", "gateways/+/telemetry")
#: Unacknowledged messages the broker may send this bridge before it waits for acks: the
#: protocol's maximum, so a bridge that falls behind holds its backlog in flight rather
#: than in the broker's per-client queue, which Mosquitto caps (``max_queued_messages``,
#: 1,000 by default) and past which it drops messages.
RECEIVE_MAXIMUM = 65_535
#: Messages decoded and offered to ingest together, at most; and payload bytes, at most
#: (a gateway message carries a hundred readings or more): one cycle stays a few tens of
#: milliseconds, so a premium reading received meanwhile is offered soon.
CYCLE_MESSAGES = 5_000
CYCLE_BYTES = 512 * 1024
#: A cycle is decoded and offered in runs of at most this many messages or payload bytes,
#: and premium-lane messages that arrived meanwhile are offered between runs.
RUN_MESSAGES = 2_000
RUN_BYTES = 128 * 1024
#: How often parked readings are offered again while the bridge is behind its broker:
#: seldom enough that premium readings waiting in the inbox go first, often enough that
#: standard readings keep reaching the workers.
PARKED_BEHIND_WAIT_S = 0.5


@dataclass(frozen=True)
class BridgeOptions:
    group: str = "iotsched"
    filters: tuple[str, ...] = DEFAULT_FILTERS
    client_id: str = "iotsched-bridge"
    session_expiry_s: int = 3600
    receive_maximum: int = RECEIVE_MAXIMUM
    #: Acknowledge (after publishing what the producer holds) at least this often. Each
    #: round cuts every partial batch: at 100 ms gateway traffic went out as many small
    #: tasks (73,000–90,000 readings/s in mqtt-bench, against 100,000–122,000 at 250 ms).
    #: Premium batches still go out on their own age limit (25 ms); only acks wait.
    ack_interval_ms: float = 250.0
    #: Subscribe to the premium topics (each telemetry filter + ``/premium``) on a second
    #: connection whose messages are taken first.
    premium_lane: bool = True


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


class MqttBridge:
    def __init__(
        self,
        producer: Producer,
        broker: BrokerConfig,
        options: BridgeOptions | None = None,
        clock: Callable[[], float] = time.time,
        registry: Callable[[], Registry] | None = None,
        parked: ParkedReadingsStore | None = None,
    ) -> None:
        """``registry``: the fleet's tiers, so premium devices' messages waiting in the
        bridge are offered first (``Inbox``); without it, arrival order. ``parked``: where
        pushed-back readings wait, so their messages can be acknowledged (shared by every
        bridge of the deployment); without it they wait in the bridge, unacknowledged."""
        self.producer = producer
        self.broker = broker
        self.options = options or BridgeOptions()
        self.clock = clock
        self.stats = BridgeStats()
        self._inbox = Inbox(registry)
        self._registry = registry
        self._stop = threading.Event()
        self._held = Held()
        #: Runs with rows to park, and those rows: parked together at the cycle's end.
        self._pending: list[tuple[MessageRun, PushedBack]] = []
        opts = self.options
        self.receiver = Receiver(
            broker,
            lanes_for(opts.client_id, opts.filters, opts.premium_lane),
            opts.group,
            self._inbox,
            opts.session_expiry_s,
            opts.receive_maximum,
        )
        self._acked_ts = 0.0
        #: Set once the broker confirmed every lane's subscription.
        self.subscribed = self.receiver.subscribed
        self.parking = (
            None
            if parked is None
            else Parking(parked, self.options.client_id, producer.batcher.topology.regions)
        )
        self._parked_retry_ts = 0.0
        self._behind = False

    def stop(self) -> None:
        self._stop.set()
        self.receiver.wake.set()

    def run(self) -> BridgeStats:
        """Consume until ``stop()``; then publish what is buffered and acknowledge it."""
        if self.parking is not None:
            self.parking.start()
        try:
            self.receiver.connect()
            while not self._stop.is_set():
                self.receiver.wake.wait(0.005)
                self.receiver.wake.clear()
                self.step()
            self.step()
            self._ack_all()
        finally:
            self.receiver.close()
        return self.stats

    def step(self) -> None:
        """One cycle: offer held and new messages to ingest, publish and ack when due."""
        now = self.clock()
        received = self._inbox.take(CYCLE_MESSAGES, CYCLE_BYTES)
        # More waiting than one cycle takes: the bridge is behind its broker. Non-premium
        # readings of gateway messages are parked unoffered (one write), so the cycle ends
        # sooner and premium readings in gateway messages still waiting are offered sooner;
        # parked ones are offered when the bridge has caught up, oldest first.
        behind = self._inbox.backlog > 0
        if behind and not self._behind:  # parked readings wait while premium goes first
            self._parked_retry_ts = now + PARKED_BEHIND_WAIT_S
        self._behind = behind
        self.stats.messages += len(received)
        for run in _runs(received):
            self._offer(run, behind)
            # Premium-lane messages that came in while the run was decoded and offered go
            # now, not after the cycle's last run: a starved cycle can take seconds.
            self._offer_lane()
        # Held readings (never premium) go after new messages, and only once their region
        # takes readings again: re-offering a large hold to a closed region would spend
        # the cycle's time while premium readings wait behind it.
        if self._held.due(now):
            self._offer_held(self.clock())
        if self.parking is not None and now >= self._parked_retry_ts:
            offered = self.parking.reoffered
            res = self.parking.offer_again(self.producer, now)
            self.stats.accepted += res.accepted
            self.stats.rejected += res.rejected
            # Caught up and parked readings were there: look again at the next cycle; while
            # behind, rarely: a re-offer is a cycle's worth of work premium would wait for.
            more = not behind and self.parking.reoffered > offered
            wait_s = PARKED_BEHIND_WAIT_S if behind else PUSHED_BACK_WAIT_S
            self._parked_retry_ts = now + (0.0 if more else wait_s)
        # And those that came in during the re-offers: out with this round's flush.
        self._offer_lane()
        self._park_pending(now)
        # The clock now, not at the cycle's start: premium readings offered at its start
        # have aged by the cycle's length (at load, longer than their 25 ms age limit).
        now = self.clock()
        self.producer.poll(now)
        due = (now - self._acked_ts) * 1000.0 >= self.options.ack_interval_ms
        waiting = self.receiver.acks_due
        if waiting and (due or waiting >= self.options.receive_maximum // 2):
            self._ack_all()

    def _offer_lane(self) -> None:
        """Offer the premium-lane messages that came in since the cycle took its messages."""
        lane = self._inbox.take_lane(CYCLE_MESSAGES, CYCLE_BYTES)
        if lane:
            self.stats.messages += len(lane)
            self._offer(lane, False)

    def _offer(self, received: list[Received], behind: bool) -> None:
        """Decode a run of messages and offer their readings. While ``behind``, gateway
        messages' non-premium rows of known devices are parked instead of offered: a single
        reading's topic names its device, so the inbox already takes premium ones first and
        deferring the rest would only add the parking round trip to their way."""
        now = self.clock()
        d = decode_messages(received, self.producer.limits, now)
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
        if behind and self.parking is not None and self._registry is not None and ids.size:
            later = np.asarray([b"/gateways/" in m[0] for m in received], dtype=bool)[owner]
            if later.any():
                deferred = deferrable(self._registry(), ids, later)
        self._ingest(run, d.letters, now, deferred=deferred)

    def _offer_held(self, now: float) -> None:
        run = self._held.take_open(self.producer.closed(), now)
        if run is not None:
            self._ingest(run, [], now, again=True)

    def _ingest(
        self,
        run: MessageRun,
        letters: list[DeadLetter],
        now: float,
        again: bool = False,
        deferred: tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]] | None = None,
    ) -> None:
        """A run's readings to ingest but the ``deferred`` rows (positions, regions), which
        are parked unoffered. A message whose readings were all taken is acknowledged at the
        next round; one with readings pushed back (or deferred) waits for the cycle's
        parking write, or is held in the bridge with just those. ``again``: rows offered
        before, latency running from their ``offered_ts``."""
        take = None
        if deferred is not None and deferred[0].size:
            take = np.setdiff1d(np.arange(run.device_id.size), deferred[0])
        cols = [run.device_id, run.ts, run.values, run.offered_ts]
        ids, tss, vals, offered = cols if take is None else [c[take] for c in cols]
        res = self.producer.ingest_columns(
            ids, tss, vals, now_ts=now, extra_letters=letters, offered_ts=offered if again else None
        )
        self.stats.accepted += res.accepted
        self.stats.rejected += res.rejected
        res_o = _NOTHING_BACK
        if run.others:
            res_o = self.producer.ingest(run.others)
            self.stats.accepted += res_o.accepted
            self.stats.rejected += res_o.rejected
        self.stats.pushed_back += int(res.pushed_back_index.size + res_o.pushed_back_index.size)
        back_rows, row_regions = res.pushed_back_index, res.pushed_back_region
        if take is not None and deferred is not None:
            back_rows = np.concatenate((deferred[0], take[back_rows]))
            row_regions = np.concatenate((deferred[1], row_regions))
        back = PushedBack(back_rows, row_regions, res_o.pushed_back_index, res_o.pushed_back_region)
        if not back.rows.size and not back.others.size:
            self.receiver.ack(run.messages)
        elif back.rows.size and self.parking is not None:
            self._pending.append((run, back))
        else:
            self.receiver.ack(self._held.hold(run, back, now))

    def _park_pending(self, now: float) -> None:
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
                self.receiver.ack(self._held.hold(run, back, now))
            else:
                self.receiver.ack(run.messages)

    def _ack_all(self) -> None:
        """Publish everything the producer buffered, then acknowledge what it covers:
        MQTT messages, and parked batches ingest took."""
        self.producer.flush()
        self._acked_ts = self.clock()
        if self.parking is not None:
            self.parking.published()
        self.stats.acked += self.receiver.send_acks()


def _runs(received: list[Received]) -> Iterator[list[Received]]:
    """A cycle's messages in runs of at most ``RUN_MESSAGES`` messages or (past)
    ``RUN_BYTES`` payload bytes, in order."""
    run: list[Received] = []
    size = 0
    for message in received:
        run.append(message)
        size += len(message[1])
        if len(run) >= RUN_MESSAGES or size >= RUN_BYTES:
            yield run
            run, size = [], 0
    if run:
        yield run
