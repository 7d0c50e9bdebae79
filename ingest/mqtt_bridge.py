"""MqttBridge: devices and gateways in over MQTT, through the same producer as every ingest.

The bridge subscribes with MQTT v5 shared subscriptions (``$share/{group}/{filter}``)
so several bridge processes split one stream, at QoS 1 with manual acknowledgement:

- a message is acknowledged only once every reading it carries was taken by ingest
  (accepted, or dead-lettered with its reason) *and* the producer has published what
  it buffered (``Producer.flush`` before each round of acks), so a bridge killed at any
  point loses nothing: the broker redelivers what was not acknowledged. Delivery is
  at least once: readings flushed just before a crash are delivered again.
- readings ingest pushes back are parked in Redis and their messages acknowledged once
  that write succeeded, or held in the bridge unacknowledged (``ingest.mqtt_intake``), so
  the session's receive window stays open and premium messages never wait at the broker
  behind held standard ones.
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
from collections.abc import Callable

from ingest.mqtt_client import BrokerConfig
from ingest.mqtt_held import PUSHED_BACK_WAIT_S
from ingest.mqtt_inbox import Inbox, runs
from ingest.mqtt_intake import BridgeStats, Intake
from ingest.mqtt_lanes import lanes_for
from ingest.mqtt_options import (
    CYCLE_BYTES,
    CYCLE_MESSAGES,
    DEFAULT_FILTERS,
    PARKED_BEHIND_WAIT_S,
    RECEIVE_MAXIMUM,
    RUN_BYTES,
    RUN_MESSAGES,
    SLOW_RUN_MS,
    BridgeOptions,
)
from ingest.mqtt_parking import Parking
from ingest.mqtt_receiver import Receiver
from ingest.producer import Producer
from scheduler.registry import Registry
from stores.parked_readings import ParkedReadingsStore

__all__ = [
    "CYCLE_BYTES",
    "CYCLE_MESSAGES",
    "DEFAULT_FILTERS",
    "RECEIVE_MAXIMUM",
    "BridgeOptions",
    "BridgeStats",
    "MqttBridge",
]


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
        self._inbox = Inbox(registry)
        self._stop = threading.Event()
        opts = self.options
        regions = producer.batcher.topology.regions
        self.parking = None if parked is None else Parking(parked, opts.client_id, regions)
        self.receiver = Receiver(
            broker,
            lanes_for(opts.client_id, opts.filters, opts.premium_lane),
            opts.group,
            self._inbox,
            opts.session_expiry_s,
            opts.receive_maximum,
        )
        self._intake = Intake(producer, self.receiver.ack, clock, registry, self.parking)
        self._acked_ts = 0.0
        #: Set once the broker confirmed every lane's subscription.
        self.subscribed = self.receiver.subscribed
        self._parked_retry_ts = 0.0
        self._behind = False

    @property
    def stats(self) -> BridgeStats:
        """What the bridge did so far."""
        return self._intake.stats

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
        for run in runs(received, RUN_MESSAGES, RUN_BYTES):
            started = self.clock()
            self._intake.offer(run, behind)
            # Premium-lane messages that came in while the run was decoded and offered go
            # now, not after the cycle's last run: a starved cycle can take seconds.
            self._offer_lane()
            self._send_premium_if_slow(started)
        started = self.clock()
        # Held readings (never premium) go after new messages, and only once their region
        # takes readings again: re-offering a large hold to a closed region would spend
        # the cycle's time while premium readings wait behind it.
        if self._intake.held.due(now):
            self._intake.offer_held(self.clock())
        if self.parking is not None and now >= self._parked_retry_ts:
            self._offer_parked(now, behind)
        # And those that came in during the re-offers: out with this round's flush.
        self._offer_lane()
        self._send_premium_if_slow(started)
        self._intake.park_pending(now)
        # The clock now, not at the cycle's start: premium readings offered at its start
        # have aged by the cycle's length (at load, longer than their 25 ms age limit).
        now = self.clock()
        self.producer.poll(now)
        due = (now - self._acked_ts) * 1000.0 >= self.options.ack_interval_ms
        waiting = self.receiver.acks_due
        if waiting and (due or waiting >= self.options.receive_maximum // 2):
            self._ack_all()

    def _send_premium_if_slow(self, started: float) -> None:
        """Publish premium readings buffered so far when the work since ``started`` took
        ``SLOW_RUN_MS`` or more: the next run will likely take as long, and premium's age
        limit is only checked at the end of the next ingest call, so premium would wait
        for all of that run too (offer to published was 43 ms at p50 and 284 ms at p99).
        A quick run leaves premium to its age limit, which keeps its batches larger."""
        if (self.clock() - started) * 1000.0 >= SLOW_RUN_MS:
            self.producer.send_premium()

    def _offer_parked(self, now: float, behind: bool) -> None:
        """Parked readings of regions that take readings again, oldest first."""
        assert self.parking is not None
        offered = self.parking.reoffered
        self._intake.count(self.parking.offer_again(self.producer, now))
        # Caught up and parked readings were there: look again at the next cycle; while
        # behind, rarely: a re-offer is a cycle's worth of work premium would wait for.
        more = not behind and self.parking.reoffered > offered
        wait_s = PARKED_BEHIND_WAIT_S if behind else PUSHED_BACK_WAIT_S
        self._parked_retry_ts = now + (0.0 if more else wait_s)

    def _offer_lane(self) -> None:
        """Offer the premium-lane messages that came in since the cycle took its messages."""
        lane = self._inbox.take_lane(CYCLE_MESSAGES, CYCLE_BYTES)
        if lane:
            self._intake.offer(lane)

    def _ack_all(self) -> None:
        """Publish everything the producer buffered, then acknowledge what it covers:
        MQTT messages, and parked batches ingest took."""
        self.producer.flush()
        self._acked_ts = self.clock()
        if self.parking is not None:
            self.parking.published()
        self._intake.stats.acked += self.receiver.send_acks()
