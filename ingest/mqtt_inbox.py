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
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from itertools import accumulate, compress
from operator import itemgetter

import numpy as np
import numpy.typing as npt
import orjson

from ingest.mqtt_client import Received
from ingest.mqtt_payload import device_topic_ids
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
        # Sorted messages, oldest first: lists, so a take moves its messages in one slice
        # (the memmove of what stays costs less than a pop per message).
        self._first: list[Received] = []
        self._premium: list[Received] = []
        self._rest: list[Received] = []

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
        if not self._arrived:
            return
        arrived: list[Received] = []
        while self._arrived:
            arrived.extend(self._arrived.popleft())
        if self._registry is None:
            self._rest.extend(arrived)
            return
        # Every read since the last take at once: a registry lookup costs tens of
        # microseconds whatever its size, and a read holds a dozen messages or so.
        premium = self._is_premium(arrived)
        if premium.any():
            self._premium.extend(compress(arrived, premium.tolist()))
            self._rest.extend(compress(arrived, (~premium).tolist()))
        else:
            self._rest.extend(arrived)

    def _is_premium(self, part: list[Received]) -> npt.NDArray[np.bool_]:
        assert self._registry is not None
        reg = self._registry()
        rows = reg.lookup(_topic_devices([m[0] for m in part]))
        return (rows >= 0) & (reg.tier[np.maximum(rows, 0)] == 0)  # type: ignore[no-any-return]


def runs(received: list[Received], max_messages: int, max_bytes: int) -> Iterator[list[Received]]:
    """A cycle's messages in runs of at most ``max_messages`` messages or (past)
    ``max_bytes`` payload bytes, in order."""
    run: list[Received] = []
    size = 0
    for message in received:
        run.append(message)
        size += len(message[1])
        if len(run) >= max_messages or size >= max_bytes:
            yield run
            run, size = [], 0
    if run:
        yield run


def _pop(queues: tuple[list[Received], ...], max_messages: int, max_bytes: int) -> list[Received]:
    """Messages off the queues in turn, up to ``max_messages`` or (past) ``max_bytes``."""
    out: list[Received] = []
    size = 0
    for queue in queues:
        room = max_messages - len(out)
        if room <= 0 or size >= max_bytes:
            break
        head = queue[:room]
        # before[i]: payload bytes taken before message i; it is taken while under max_bytes.
        before = list(accumulate(map(len, map(itemgetter(1), head)), initial=size))
        n = bisect_left(before, max_bytes, 0, len(head))
        out.extend(head[:n])
        del queue[:n]
        size = before[n]
    return out


def _topic_devices(topics: Sequence[bytes]) -> npt.NDArray[np.uint64]:
    """The device id each topic names (``_topic_device``), for a whole part at once when
    its topics are all one prefix's devices' (the usual part)."""
    ids = device_topic_ids(topics)
    if ids is not None and ids.replace(b",", b"").isdigit():
        try:
            numbers = orjson.loads(b"[" + ids + b"]")
        except orjson.JSONDecodeError:  # a leading zero: taken one at a time below
            numbers = None
        # orjson reads a number past 64 bits as a float: not an id either.
        if numbers is not None and set(map(type, numbers)) == {int}:
            return np.array(numbers, dtype=np.uint64)
    return np.array([_topic_device(t) for t in topics], dtype=np.uint64)


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
