"""Receiver: the MQTT bridge's network side.

It connects each lane (``ingest.mqtt_lanes``) with a persistent session and manual
acknowledgement, subscribes it to its shared filters, hands what each lane's network
thread parses to the bridge's inbox (the premium lane's ahead of every other), wakes the
bridge loop, and sends acknowledgements on the connection each message came on.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import paho.mqtt.client as mqtt

from ingest.mqtt_client import BrokerConfig, Received, connect
from ingest.mqtt_inbox import Inbox
from ingest.mqtt_lanes import LANE_SHIFT, Lane

logger = logging.getLogger(__name__)

#: Messages waiting that wake the bridge loop before its next look.
WAKE_AT_MESSAGES = 256


class Receiver:
    def __init__(
        self,
        broker: BrokerConfig,
        lanes: list[Lane],
        group: str,
        inbox: Inbox,
        session_expiry_s: int,
        receive_maximum: int,
    ) -> None:
        self.broker = broker
        self.lanes = lanes
        self.group = group
        self.inbox = inbox
        self.session_expiry_s = session_expiry_s
        self.receive_maximum = receive_maximum
        #: Set when messages wait for the bridge loop.
        self.wake = threading.Event()
        #: Set once the broker confirmed every lane's subscription.
        self.subscribed = threading.Event()
        self._waiting = 0

    def connect(self) -> None:
        for lane in self.lanes:
            self._connect(lane)

    def close(self) -> None:
        for lane in self.lanes:
            lane.close()

    @property
    def acks_due(self) -> int:
        """Messages due for acknowledgement on the lane with the most."""
        return max(len(lane.acks) for lane in self.lanes)

    def ack(self, messages: list[tuple[int, int]]) -> None:
        """Due for acknowledgement, each on the lane its packet id is tagged with."""
        if len(self.lanes) == 1:
            self.lanes[0].acks.add(messages)
            return
        for m in messages:
            self.lanes[m[0] >> LANE_SHIFT].acks.add([m])

    def send_acks(self) -> int:
        return sum(lane.send_acks() for lane in self.lanes)

    # Called on paho's network threads: hand over and wake the bridge loop.
    def plain(self, received: list[Received]) -> None:
        """The plain lane's messages, as its network thread parsed them."""
        self.lanes[0].acks.arrived(received)
        self.inbox.put(received)
        # Wake the loop early for a burst; otherwise it looks every few ms on its own.
        # Once per burst: setting an Event costs more than taking the messages.
        self._waiting += len(received)
        if self._waiting >= WAKE_AT_MESSAGES:
            self._waiting = 0
            self.wake.set()

    def premium(self, received: list[Received]) -> None:
        """The premium lane's messages: taken before any other, and the loop woken now."""
        received = self.lanes[1].tagged(received)
        self.lanes[1].acks.arrived(received)
        self.inbox.put_premium(received)
        self.wake.set()

    def _connect(self, lane: Lane) -> None:
        client = connect(
            self.broker,
            lane.client_id,
            manual_ack=True,
            clean_start=False,
            session_expiry_s=self.session_expiry_s,
            receive_maximum=self.receive_maximum,
        )
        lane.client = client
        client.on_received = self.premium if lane.number else self.plain
        client.on_message = lambda c, u, msg: self._on_message(lane, msg)
        client.on_connect = lambda c, u, f, reason, p: self._on_connect(lane, reason)
        client.on_subscribe = lambda c, u, mid, reasons, p: self._on_subscribe(lane, reasons)
        client.loop_start()

    def _on_message(self, lane: Lane, msg: mqtt.MQTTMessage) -> None:
        """A message paho handled itself (QoS 2, which the QoS 1 subscription never asks for)."""
        ct = getattr(msg.properties, "ContentType", None) if msg.properties else None
        received = [(msg._topic, bytes(msg.payload), msg.mid, msg.qos, ct)]
        (self.premium if lane.number else self.plain)(received)

    def _on_connect(self, lane: Lane, reason: Any) -> None:
        if reason.is_failure:
            logger.error("MQTT broker refused the connection: %s", reason)
            return
        assert lane.client is not None
        lane.client.subscribe([(f"$share/{self.group}/{f}", 1) for f in lane.filters])

    def _on_subscribe(self, lane: Lane, reasons: Any) -> None:
        if any(r.is_failure for r in reasons):
            logger.error("MQTT broker refused the subscription: %s", reasons)
            return
        lane.subscribed.set()
        if all(lane.subscribed.is_set() for lane in self.lanes):
            self.subscribed.set()
