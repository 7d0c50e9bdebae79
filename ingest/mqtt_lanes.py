"""Lanes: the bridge's MQTT connections, one for the plain topics and one for premium's.

A broker sends each subscriber connection its messages in arrival order, through one
socket: a premium reading published behind ten thousand standard ones waits for all of
them at the broker, in the socket and in the bridge's read loop before the bridge can see
its topic. So premium devices publish to their usual topic with ``/premium`` appended
(``devices/{id}/telemetry/premium``; a gateway sends its premium devices' readings to
``gateways/{id}/telemetry/premium``), and the bridge subscribes to those on a connection
of their own (client id ``{client_id}-premium``, its own network thread, its own session
and receive window), whose messages it takes before any other.

The suffix chooses a lane, not a tier: the registry still classifies every reading, so a
standard device on a premium topic is processed as standard (a broker ACL keeps devices
off topics that are not theirs). The plain topics keep working for every device.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

from ingest.mqtt_acks import Acks
from ingest.mqtt_client import BufferedClient, Received

PREMIUM_SUFFIX = "/premium"
_SUFFIX_BYTES = PREMIUM_SUFFIX.encode()
#: A message's packet id with its lane's number above the protocol's 16 bits: one list
#: of messages (and of acks due) holds every lane's.
LANE_SHIFT = 16


def premium_filters(filters: Iterable[str]) -> tuple[str, ...]:
    """The premium lane's filters: each telemetry filter with ``/premium`` appended
    (a filter ending in ``#`` already covers the premium topics beneath it)."""
    return tuple(f + PREMIUM_SUFFIX for f in filters if f.endswith("/telemetry"))


def premium_topic(topic: bytes) -> bytes:
    """A premium lane topic as the decoder knows it: without the suffix."""
    return topic[: -len(_SUFFIX_BYTES)] if topic.endswith(_SUFFIX_BYTES) else topic


@dataclass
class Lane:
    """One connection: its filters, its number (tagged on its messages' packet ids), the
    messages due for acknowledgement on it, and whether the broker confirmed its
    subscription."""

    number: int
    filters: tuple[str, ...]
    client_id: str
    acks: Acks = field(default_factory=Acks)
    client: BufferedClient | None = None
    subscribed: threading.Event = field(default_factory=threading.Event)

    def tagged(self, received: list[Received]) -> list[Received]:
        """Messages as the bridge takes them: packet ids tagged with the lane's number,
        and (premium lane) topics without the suffix."""
        if not self.number:
            return received
        tag = self.number << LANE_SHIFT
        return [(premium_topic(t), p, mid | tag, q, ct) for t, p, mid, q, ct in received]

    def send_acks(self) -> int:
        if self.client is None:
            return 0
        return self.acks.send(self.client)

    def close(self) -> None:
        if self.client is not None:
            self.client.disconnect()
            self.client.loop_stop()


def lanes_for(client_id: str, filters: tuple[str, ...], premium: bool) -> list[Lane]:
    """The bridge's lanes: the plain one, then (``premium``) the premium one; a tagged
    packet id ``mid`` is lane ``mid >> LANE_SHIFT``'s."""
    lanes = [Lane(0, filters, client_id)]
    extra = premium_filters(filters) if premium else ()
    if extra:
        lanes.append(Lane(1, extra, f"{client_id}-premium"))
    return lanes
