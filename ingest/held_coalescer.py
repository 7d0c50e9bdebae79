"""Held readings picked for screening wait here, per region, until their copy is dense.

Screening a reading costs mostly its device's detector state: one fetch and one store
per device per copy. A gateway hands held readings over a chunk at a time, about one
reading per device, and copies sent that way cost screening about twice what routine
processing costs per reading; coalesced to four readings per device, about a third as
much per reading (``bench/screen_cost.py --readings 20000 --per-device 1`` vs ``4``:
13.5-15.7 vs 5.1-8.6 us per reading, load 16). The held-screening budget follows the
measured cost (``scheduler.screen_cost``), so a denser copy buys a larger sample.

So picked readings are kept in the producer's memory for up to
``defaults.HELD_COALESCE_MAX_AGE_MS`` (or ``HELD_SCREEN_MAX_READINGS`` of a region), then
sent in one copy, oldest first. They are marked screened when picked, so a re-offer
does not copy them again; a kept reading is never dropped, only sent later. A device's
newer reading admitted unscreened must not reach screening before its kept ones: the
screener sends the region's kept readings first (``HeldScreener.admitted``).
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from ingest.held_rejoin import Held
from scheduler import defaults
from scheduler.registry import Registry


@dataclass
class HeldCoalescer:
    """Picked held readings per region (registry rows, ids, event times, values, tiers)."""

    n_rows: int
    max_readings: int = defaults.HELD_SCREEN_MAX_READINGS
    max_age_s: float = defaults.HELD_COALESCE_MAX_AGE_MS / 1000.0
    _pieces: dict[int, list[Held]] = field(default_factory=dict)
    _since_ts: dict[int, float] = field(default_factory=dict)
    _sizes: dict[int, int] = field(default_factory=dict)
    #: Per region, when its kept readings were taken on: [time, readings] oldest first,
    #: consumed from the front as readings go (``oldest_ts``).
    _taken_on: dict[int, deque[list[float]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        #: Per registry row: readings kept here.
        self._kept = np.zeros(self.n_rows, dtype=np.int64)

    @property
    def size(self) -> int:
        return sum(self._sizes.values())

    def size_of(self, region: int) -> int:
        """Readings of ``region`` kept here."""
        return self._sizes.get(region, 0)

    def add(self, region: int, held: Held, now_ts: float) -> None:
        if not held[0].size:
            return
        if not in_time_order(held[2]):
            order = np.argsort(held[2], kind="stable")
            held = tuple(c[order] for c in held)  # type: ignore[assignment]
        self._pieces.setdefault(region, []).append(held)
        self._since_ts.setdefault(region, now_ts)
        self._sizes[region] = self._sizes.get(region, 0) + int(held[0].size)
        self._taken_on.setdefault(region, deque()).append([now_ts, float(held[0].size)])
        np.add.at(self._kept, held[0], 1)

    def oldest_ts(self, region: int) -> float | None:
        """When the oldest of the region's kept readings was taken on (None: none kept).

        Readings go oldest first (by event time), so the count sent is taken from the
        oldest additions; a copy of some devices' readings only (``taken`` with
        ``devices``) is counted the same way, which can only make this look younger."""
        taken_on = self._taken_on.get(region)
        return taken_on[0][0] if taken_on else None

    def holds(self, rows: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
        """True where a device has readings kept here."""
        return self._kept[rows] > 0

    def due(self, now_ts: float) -> list[int]:
        """Regions whose kept readings reached the size or the age limit."""
        return [
            code
            for code, since in self._since_ts.items()
            if self._sizes[code] >= self.max_readings or now_ts - since >= self.max_age_s
        ]

    def next_due_ts(self) -> float | None:
        """When the oldest region's kept readings reach the age limit (None: none kept)."""
        if not self._since_ts:
            return None
        return min(self._since_ts.values()) + self.max_age_s

    def regions(self) -> list[int]:
        return list(self._pieces)

    def peek(
        self,
        region: int,
        devices: npt.NDArray[np.int64] | None = None,
        limit: int | None = None,
    ) -> Held:
        """The region's kept readings (of ``devices``' rows only, when given; the oldest
        ``limit`` only, when given), oldest first; left here until ``taken``."""
        pieces = self._pieces[region]
        if devices is None and limit is not None and _follow_on(pieces):
            # The oldest ``limit`` only: the pieces ahead that hold them are joined, the
            # rest left as they are. Joining every piece at every send copied the whole
            # kept backlog each time (a million readings a region at 2x).
            k, n = 0, 0
            while k < len(pieces) and n < limit:
                n += int(pieces[k][0].size)
                k += 1
            head = pieces[0] if k == 1 else _joined(pieces[:k])
            self._pieces[region] = [head, *pieces[k:]]
            return head if n <= limit else tuple(c[:limit] for c in head)  # type: ignore[return-value]
        cols = pieces[0] if len(pieces) == 1 else _joined(pieces)
        # Pieces usually arrive oldest first already: then no sort and no second copy.
        t = cols[2]
        order = None if in_time_order(t) else np.argsort(t, kind="stable")
        sorted_: Held = cols if order is None else tuple(c[order] for c in cols)  # type: ignore[assignment]
        # One piece from now on: a failed send keeps it, in order, for the next try.
        self._pieces[region] = [sorted_]
        picked = self._picked(sorted_, devices, limit)
        return sorted_ if picked is None else tuple(c[picked] for c in sorted_)  # type: ignore[return-value]

    def taken(
        self,
        region: int,
        devices: npt.NDArray[np.int64] | None = None,
        limit: int | None = None,
    ) -> None:
        """What ``peek`` returned for the same ``devices`` and ``limit`` was sent."""
        pieces = self._pieces[region]
        if devices is None and limit is not None and limit < self._sizes[region]:
            # ``peek`` left the oldest ``limit`` at the head of the first piece.
            head = pieces[0]
            np.subtract.at(self._kept, head[0][:limit], 1)
            rest = tuple(c[limit:] for c in head)
            self._pieces[region] = [rest, *pieces[1:]] if rest[0].size else pieces[1:]  # type: ignore[list-item]
            self._consume(region, limit)
            self._sizes[region] -= limit
            return
        if devices is not None:
            (piece,) = self._pieces[region]
            sent = self._picked(piece, devices, limit)
            if sent is not None:
                left = _rest(sent, int(piece[0].size))
                np.subtract.at(self._kept, piece[0][sent], 1)
                rest = tuple(c[left] for c in piece)
                self._pieces[region] = [rest]  # type: ignore[list-item]
                self._consume(region, self._sizes[region] - int(rest[0].size))
                self._sizes[region] = int(rest[0].size)
                return
        for piece in self._pieces.pop(region):
            np.subtract.at(self._kept, piece[0], 1)
        del self._since_ts[region]
        del self._sizes[region]
        self._taken_on.pop(region, None)

    def _consume(self, region: int, readings: int) -> None:
        """``readings`` of the region went: they leave the oldest additions."""
        taken_on, left = self._taken_on[region], float(readings)
        while taken_on and left > 0:
            head = taken_on[0]
            if head[1] > left:
                head[1] -= left
                return
            left -= head[1]
            taken_on.popleft()

    @staticmethod
    def _picked(
        piece: Held, devices: npt.NDArray[np.int64] | None, limit: int | None
    ) -> slice | npt.NDArray[np.intp] | None:
        """Which readings of a region's one sorted piece ``devices`` and ``limit`` pick (a
        prefix as a slice, others by index: gathering by a scattered boolean mask costs
        numpy far more); None: all of them."""
        size = int(piece[0].size)
        if devices is None:
            # The oldest first: the rest of a device's readings follow in a later copy.
            return None if limit is None or limit >= size else slice(0, limit)
        picked = np.flatnonzero(np.isin(piece[0], devices))
        if limit is not None:
            picked = picked[:limit]
        return None if picked.size == size else picked

    def rebind(self, registry: Registry) -> None:
        """Follow a new registry snapshot: kept readings move with their devices' ids (a
        device no longer registered is let go: its readings are refused when offered)."""
        self._kept = np.zeros(len(registry), dtype=np.int64)
        for code, pieces in list(self._pieces.items()):
            moved = []
            for _, dev, t, v, tier in pieces:
                new = registry.lookup(dev)
                ok = new >= 0
                moved.append((new[ok], dev[ok], t[ok], v[ok], tier[ok]))
                np.add.at(self._kept, new[ok], 1)
            self._pieces[code] = moved
            size = sum(int(p[0].size) for p in moved)
            self._consume(code, self._sizes[code] - size)
            self._sizes[code] = size


def _joined(pieces: list[Held]) -> Held:
    return tuple(np.concatenate([p[k] for p in pieces]) for k in range(5))  # type: ignore[return-value]


def _follow_on(pieces: list[Held]) -> bool:
    """Whether the pieces, each in time order (``add``), are in time order one after the
    other: then joined they need no sort."""
    return all(a[2][-1] <= b[2][0] for a, b in itertools.pairwise(pieces))


def in_time_order(t: npt.NDArray[np.float64]) -> bool:
    """True when event times never go back (then no sort, and no sorted copy, is needed)."""
    return t.size < 2 or bool((t[1:] >= t[:-1]).all())


def _rest(picked: slice | npt.NDArray[np.intp], size: int) -> slice | npt.NDArray[np.intp]:
    """The readings of a piece of ``size`` that ``picked`` (from ``_picked``) leaves."""
    if isinstance(picked, slice):
        return slice(picked.stop, size)
    left = np.ones(size, dtype=np.bool_)
    left[picked] = False
    return np.flatnonzero(left)
