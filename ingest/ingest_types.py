"""What the producer's callers and collaborators see of it: its result, and the parts
it is built from (publisher, placer, gates, hooks) as types."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt
import redis
from kombu.exceptions import OperationalError

from scheduler.model import Batch
from scheduler.registry import Registry


class Publisher(Protocol):
    """Sends batches on. A publisher may also define ``publish_many(batches)`` (batches
    flushed together), and, if it buffers (coalesced screening copies), ``poll(now_ts)``
    and ``flush()``; the producer calls them when present. ``screen_many(batches)``
    (screening copies only, True when sent) lets it screen readings it holds back."""

    def publish(self, batch: Batch) -> None: ...


#: Chooses each reading's processing region from (registry, row index); home region by default.
Placer = Callable[[Registry, npt.NDArray[np.int64]], npt.NDArray[np.integer]]


def home_placer(registry: Registry, rows: npt.NDArray[np.int64]) -> npt.NDArray[np.integer]:
    return registry.home_region[rows]


#: Per region code, True where the region's routine backlog is past its cap.
BacklogGate = Callable[[], npt.NDArray[np.bool_]]
#: Screening's measured cost per held reading over routine processing's (None before it
#: is measured; the admission gate measures it): the held-screening budget follows it.
ScreenCost = Callable[[], float | None]
#: True while ingest must pause (e.g. Redis close to ``maxmemory``): every new reading
#: is pushed back.
PauseGate = Callable[[], bool]

#: What a broker or store outage raises on the publish path: the batch waits in the outbox.
OUTAGE_ERRORS: tuple[type[BaseException], ...] = (redis.RedisError, OperationalError, OSError)
#: Told the (device ids, event times) of the readings each call accepted: an audit trail.
AcceptedHook = Callable[[npt.NDArray[np.uint64], npt.NDArray[np.float64]], None]

NONE = np.empty(0, dtype=np.intp)


@dataclass(frozen=True)
class IngestResult:
    accepted: int
    rejected: int
    #: Rejections by reason code, e.g. {"unknown_device": 3}.
    reasons: Mapping[str, int]
    #: Readings not taken because their region's backlog is past its cap: explicit
    #: backpressure. They are neither accepted nor dead-lettered; the caller still holds
    #: them and offers them again later. Indexes into what the caller passed in.
    pushed_back_index: npt.NDArray[np.intp] = field(default_factory=lambda: NONE)
    #: The region code each pushed-back reading was bound for: the caller may hold them
    #: per region and offer again only those whose region is open (``Producer.closed``).
    pushed_back_region: npt.NDArray[np.intp] = field(default_factory=lambda: NONE)
    #: Pushed-back readings screened at once (the rest wait for their admission, or are
    #: skipped when a newer reading of their device was screened first).
    screened_while_held: int = 0

    @property
    def pushed_back(self) -> int:
        return int(self.pushed_back_index.size)
