"""Acks: the MQTT messages a bridge may acknowledge, sent in the order they arrived.

Mosquitto 2.0 looks each acknowledged packet id up in its in-flight list from the
oldest message (a linked list): an ack for a newer message sent ahead of older ones
still unacknowledged walks past all of them. The bridge takes premium messages first,
so its acks come out of arrival order; they are put back in it before sending.
"""

from __future__ import annotations

from itertools import repeat
from operator import itemgetter

import numpy as np

from ingest.mqtt_client import BufferedClient, Received

#: A packet id's bits: the bridge tags the ones above with the connection (lane) it came on.
_PACKET_ID = 0xFFFF


class Acks:
    def __init__(self) -> None:
        #: (packet id, QoS) of messages whose readings are all taken, parked or letters.
        self.due: list[tuple[int, int]] = []
        #: Packet id → arrival number of messages received and not yet acknowledged.
        self._arrival: dict[int, int] = {}
        self._received = 0

    def __len__(self) -> int:
        return len(self.due)

    def arrived(self, received: list[Received]) -> None:
        """Note the arrival order (called on the network thread, before anything is taken)."""
        first = self._received
        self._received += len(received)
        numbers = range(first, self._received)
        self._arrival.update(zip(map(itemgetter(2), received), numbers, strict=True))

    def add(self, messages: list[tuple[int, int]]) -> None:
        if all(map(itemgetter(1), messages)):  # the usual: no QoS 0 message, nothing to drop
            self.due.extend(messages)
        else:
            self.due.extend(m for m in messages if m[1] > 0)

    def send(self, client: BufferedClient) -> int:
        """Acknowledge every due message, oldest first; returns how many."""
        due, self.due = self.due, []
        if set(map(itemgetter(1), due)) <= {1}:
            mids = list(map(itemgetter(0), due))
        else:
            mids = [mid for mid, qos in due if qos == 1]
        arrival = list(map(self._arrival.pop, mids, repeat(0)))
        ordered = np.array(mids, dtype=np.int64)[np.argsort(arrival, kind="stable")]
        client.ack_qos1(ordered & _PACKET_ID)
        for mid, qos in due:
            if qos == 2:
                client.ack(mid & _PACKET_ID, qos)
        return len(due)
