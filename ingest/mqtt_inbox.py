"""Inbox: MQTT messages the bridge received and has not yet offered to ingest.

The broker delivers one stream in arrival order; when ingest is the slower side, the
backlog sits here (up to the session's Receive Maximum of unacknowledged messages). A
single reading's topic names its device, so a premium device's message is known before
its payload is decoded: those are taken first, and premium readings never wait in the
bridge behind standard ones. Gateway messages mix tiers, so they keep arrival order with
the rest. Messages of the premium lane (``ingest.mqtt_lanes``) are premium by topic and
go ahead of everything.
"""

from __future__ import annotations

import collections
from collections.abc import Callable

import numpy as np

from ingest.mqtt_client import Received
from scheduler.registry import Registry

#: Looked up for a topic that names no device: no registry holds it.
_NO_DEVICE = 2**64 - 1
#: The longest decimal a device id (below 2**64) can have.
_ID_DIGITS = 20


class Inbox:
    def __init__(self, registry: Callable[[], Registry] | None = None) -> None:
        """Without a ``registry`` every message keeps arrival order."""
        self._registry = registry
        #: Handed over by the network thread (deque appends and pops are thread-safe).
        self._arrived: collections.deque[list[Received]] = collections.deque()
        self._lane: collections.deque[list[Received]] = collections.deque()
        self._first: collections.deque[Received] = collections.deque()
        self._premium: collections.deque[Received] = collections.deque()
        self._rest: collections.deque[Received] = collections.deque()

    def put(self, received: list[Received]) -> None:
        self._arrived.append(received)

    def put_premium(self, received: list[Received]) -> None:
        """Messages of the premium lane: taken ahead of every other."""
        self._lane.append(received)

    def __bool__(self) -> bool:
        return bool(self._arrived or self._lane or self._first or self._premium or self._rest)

    @property
    def backlog(self) -> int:
        """Messages sorted and still waiting: after a ``take``, what it had no room for."""
        return len(self._first) + len(self._premium) + len(self._rest)

    def take(self, max_messages: int, max_bytes: int) -> list[Received]:
        """The premium lane's messages first, then premium devices' of the plain topics,
        then the rest, each in arrival order, up to
        ``max_messages`` messages or (past) ``max_bytes`` payload bytes."""
        self._sort()
        return _pop((self._first, self._premium, self._rest), max_messages, max_bytes)

    def take_lane(self, max_messages: int, max_bytes: int) -> list[Received]:
        """Only the premium lane's messages (those that arrived during a bridge cycle, to
        go before the rest of it), as ``take``; nothing else is sorted or taken."""
        while self._lane:
            self._first.extend(self._lane.popleft())
        return _pop((self._first,), max_messages, max_bytes)

    def _sort(self) -> None:
        while self._lane:
            self._first.extend(self._lane.popleft())
        while self._arrived:
            part = self._arrived.popleft()
            if self._registry is None:
                self._rest.extend(part)
                continue
            for message, premium in zip(part, self._is_premium(part), strict=True):
                (self._premium if premium else self._rest).append(message)

    def _is_premium(self, part: list[Received]) -> list[bool]:
        assert self._registry is not None
        reg = self._registry()
        ids = np.asarray([_topic_device(m[0]) for m in part], dtype=np.uint64)
        rows = reg.lookup(ids)
        premium = (rows >= 0) & (reg.tier[np.maximum(rows, 0)] == 0)
        return premium.tolist()  # type: ignore[no-any-return]


def _pop(
    queues: tuple[collections.deque[Received], ...], max_messages: int, max_bytes: int
) -> list[Received]:
    """Messages off the queues in turn, up to ``max_messages`` or (past) ``max_bytes``."""
    out: list[Received] = []
    size = 0
    for queue in queues:
        while queue and len(out) < max_messages and size < max_bytes:
            message = queue.popleft()
            out.append(message)
            size += len(message[1])
    return out


def _topic_device(topic: bytes) -> int:
    """The device id a ``.../devices/{id}/telemetry`` topic names; _NO_DEVICE otherwise."""
    parts = topic.rsplit(b"/", 3)
    if (
        len(parts) >= 3
        and parts[-3] == b"devices"
        and parts[-1] == b"telemetry"
        and parts[-2].isdigit()
        and len(parts[-2]) < _ID_DIGITS
    ):
        return int(parts[-2])
    return _NO_DEVICE
