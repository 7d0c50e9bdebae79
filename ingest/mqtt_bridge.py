"""MqttBridge: devices and gateways in over MQTT, through the same producer as every ingest.

The bridge subscribes with MQTT v5 shared subscriptions (``$share/{group}/{filter}``)
so several bridge processes split one stream, at QoS 1 with manual acknowledgement:

- a message is acknowledged only once every reading it carries was taken by ingest
  (accepted, or dead-lettered with its reason) *and* the producer has published what
  it buffered (``Producer.flush`` before each round of acks), so a bridge killed at any
  point loses nothing: the broker redelivers what was not acknowledged. Delivery is
  at least once: readings flushed just before a crash are delivered again.
- readings ingest pushes back (``IngestResult.pushed_back_index``) stay with the bridge,
  their messages unacknowledged, and are offered again. The session's Receive Maximum
  bounds how many unacknowledged messages the broker sends: while pushed-back messages
  fill that window the broker sends nothing more, which is the flow control.

The session is persistent (``clean_start`` off, a session expiry) under a stable client
id, so a restarted bridge gets its unacknowledged messages back.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt

from ingest.mqtt_client import BrokerConfig, BufferedClient, connect
from ingest.mqtt_payload import Decoded, decode_message
from ingest.producer import Producer

logger = logging.getLogger(__name__)

DEFAULT_FILTERS = ("devices/+/telemetry", "gateways/+/telemetry")
#: Unacknowledged messages the broker may send this bridge before it waits for acks: the
#: protocol's maximum, so a bridge that falls behind holds its backlog in flight rather
#: than in the broker's per-client queue, which Mosquitto caps (``max_queued_messages``,
#: 1,000 by default) and past which it drops messages.
RECEIVE_MAXIMUM = 65_535
#: Messages decoded and offered to ingest together.
CYCLE_MESSAGES = 5_000
#: Messages waiting that wake the bridge loop before its next look.
WAKE_AT_MESSAGES = 256
#: How long pushed-back readings wait before they are offered again.
PUSHED_BACK_WAIT_S = 0.05


@dataclass(frozen=True)
class BridgeOptions:
    group: str = "iotsched"
    filters: tuple[str, ...] = DEFAULT_FILTERS
    client_id: str = "iotsched-bridge"
    session_expiry_s: int = 3600
    receive_maximum: int = RECEIVE_MAXIMUM
    #: Acknowledge (after publishing what the producer holds) at least this often.
    ack_interval_ms: float = 100.0


@dataclass
class _Held:
    """A message not yet acknowledged: readings still to offer (pushed back)."""

    mid: int
    qos: int
    rest: Decoded


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
    ) -> None:
        self.producer = producer
        self.broker = broker
        self.options = options or BridgeOptions()
        self.clock = clock
        self.stats = BridgeStats()
        self._inbox: collections.deque[mqtt.MQTTMessage] = collections.deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._held: list[_Held] = []
        self._held_retry_ts = 0.0
        self._to_ack: list[tuple[int, int]] = []
        self._acked_ts = 0.0
        self._client: BufferedClient | None = None
        self.subscribed = threading.Event()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def run(self) -> BridgeStats:
        """Consume until ``stop()``; then publish what is buffered and acknowledge it."""
        opts = self.options
        client = connect(
            self.broker,
            opts.client_id,
            manual_ack=True,
            clean_start=False,
            session_expiry_s=opts.session_expiry_s,
            receive_maximum=opts.receive_maximum,
        )
        self._client = client
        client.on_message = self._on_message
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.loop_start()
        try:
            while not self._stop.is_set():
                self._wake.wait(0.005)
                self._wake.clear()
                self.step()
            self.step()
            self._ack_all()
        finally:
            client.disconnect()
            client.loop_stop()
        return self.stats

    def step(self) -> None:
        """One cycle: offer held and new messages to ingest, publish and ack when due."""
        now = self.clock()
        if self._held and now >= self._held_retry_ts:
            held, self._held = self._held, []
            self._offer(held, now)
        batch: list[_Held] = []
        while self._inbox and len(batch) < CYCLE_MESSAGES:
            msg = self._inbox.popleft()
            ct = getattr(msg.properties, "ContentType", None) if msg.properties else None
            decoded = decode_message(msg.topic, bytes(msg.payload), ct, self.producer.limits, now)
            batch.append(_Held(msg.mid, msg.qos, decoded))
        self.stats.messages += len(batch)
        if batch:
            self._offer(batch, now)
        self.producer.poll(now)
        due = (now - self._acked_ts) * 1000.0 >= self.options.ack_interval_ms
        if self._to_ack and (due or len(self._to_ack) >= self.options.receive_maximum // 2):
            self._ack_all()

    def _offer(self, messages: list[_Held], now: float) -> None:
        owner_rows: list[int] = []
        owner_others: list[int] = []
        ids: list[int] = []
        tss: list[float] = []
        vals: list[tuple[float, ...]] = []
        others: list[Any] = []
        letters = []
        for i, m in enumerate(messages):
            d = m.rest
            owner_rows.extend([i] * len(d.device_id))
            owner_others.extend([i] * len(d.others))
            ids.extend(d.device_id)
            tss.extend(d.ts)
            vals.extend(d.values)
            others.extend(d.others)
            letters.extend(d.letters)
            self.stats.readings_offered += d.readings
        n_metrics = len(self.producer.limits.metrics)
        res = self.producer.ingest_columns(
            np.asarray(ids, dtype=np.uint64),
            np.asarray(tss, dtype=np.float64),
            np.asarray(vals, dtype=np.float64).reshape(len(ids), n_metrics),
            now_ts=now,
            extra_letters=letters,
        )
        back_rows = res.pushed_back_index
        self.stats.accepted += res.accepted
        self.stats.rejected += res.rejected
        back_others = np.empty(0, dtype=np.intp)
        if others:
            res_o = self.producer.ingest(others)
            self.stats.accepted += res_o.accepted
            self.stats.rejected += res_o.rejected
            back_others = res_o.pushed_back_index
        self.stats.pushed_back += int(back_rows.size + back_others.size)
        rests: dict[int, Decoded] = {}
        for j in back_rows.tolist():
            rest = rests.setdefault(owner_rows[j], Decoded())
            rest.device_id.append(ids[j])
            rest.ts.append(tss[j])
            rest.values.append(vals[j])
        for j in back_others.tolist():
            rests.setdefault(owner_others[j], Decoded()).others.append(others[j])
        for i, m in enumerate(messages):
            if i in rests:
                self._held.append(_Held(m.mid, m.qos, rests[i]))
            elif m.qos > 0:
                self._to_ack.append((m.mid, m.qos))
        if rests:
            self._held_retry_ts = now + PUSHED_BACK_WAIT_S

    def _ack_all(self) -> None:
        """Publish everything the producer buffered, then acknowledge what it covers."""
        self.producer.flush()
        self._acked_ts = self.clock()
        client = self._client
        if client is None:
            return
        client.ack_qos1([mid for mid, qos in self._to_ack if qos == 1])
        for mid, qos in self._to_ack:
            if qos == 2:
                client.ack(mid, qos)
        self.stats.acked += len(self._to_ack)
        self._to_ack = []

    # paho callbacks, on its network thread: hand over and wake the bridge loop.
    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self._inbox.append(msg)
        # Wake the loop early for a burst; otherwise it looks every few ms on its own.
        # Once per burst: setting an Event costs more than taking the message.
        if len(self._inbox) == WAKE_AT_MESSAGES:
            self._wake.set()

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        if reason.is_failure:
            logger.error("MQTT broker refused the connection: %s", reason)
            return
        subs = [(f"$share/{self.options.group}/{f}", 1) for f in self.options.filters]
        client.subscribe(subs)

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, props: Any
    ) -> None:
        if any(r.is_failure for r in reasons):
            logger.error("MQTT broker refused the subscription: %s", reasons)
            return
        self.subscribed.set()
