"""Readings a gateway holds after backpressure handed them back, offered again in order."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from ingest.held_coalescer import in_time_order
from ingest.producer import IngestResult, Producer
from scheduler.latency import N_BUCKETS, bucket_of
from scheduler.registry import Registry

#: How long a producer waits before offering pushed-back readings again; doubled while
#: nothing is taken, up to the longest wait (about the gate's own refresh), so a closed
#: region costs the producer a re-offer every 0.2 s, not a busy loop.
PUSHED_BACK_WAIT_S = 0.05
PUSHED_BACK_MAX_WAIT_S = 0.2

#: Screens readings the gateway holds itself at once (``Producer.screen_held``: ids,
#: event times, values); returns how many it screened.
ScreenHeld = Callable[[npt.NDArray[Any], npt.NDArray[Any], npt.NDArray[Any]], int]


class HeldReadings:
    """Readings handed back by backpressure, held by the gateway and offered again.

    New readings keep flowing (premium is never pushed back) until the buffer
    holds ``max_readings``; then the gateway waits.

    Held per region, oldest first, as the column pieces they arrived in: holding more
    and offering some again costs in proportion to what moves, not to what is held (a
    spike can leave millions waiting, and copying them all on every re-offer would stall
    the gateway, and premium behind it).
    """

    def __init__(
        self,
        max_readings: int,
        offer_readings: int | None = None,
        screen: ScreenHeld | None = None,
    ) -> None:
        """``offer_readings``: the most offered again at once (a gateway chunk), so one
        call never holds up the premium batches the producer has waiting.

        ``screen``: readings the gateway holds itself (behind held ones, or deferred while
        behind its schedule) are screened through it at once, as ingest screens the
        readings it pushes back; the producer then does not screen them again."""
        self.max_readings = max_readings
        self.offer_readings = offer_readings or max_readings
        #: Hand-backs, each time; and distinct readings handed back at least once.
        self.pushed_back = 0
        self.pushed_back_readings = 0
        #: Readings the gateway held itself while behind its schedule (premium first).
        self.deferred = 0
        #: Readings the gateway held itself that ``screen`` screened while held.
        self.screened = 0
        #: Per ``scheduler.latency`` bucket, readings handed to ``screen`` that had waited
        #: here that long (``handover_wait_ms``). Counted with a bincount, not a sort: the
        #: gateway is what falls behind when its machine is short of time.
        self._handover_wait = np.zeros(N_BUCKETS, dtype=np.int64)
        self._screen = screen
        self._to_screen: list[tuple[npt.NDArray[Any], ...]] = []
        #: Per region code: readings held, and the newest of them not yet handed to
        #: ``screen`` (the rest may be offered again while those wait their turn).
        self._held_count: dict[int, int] = {}
        self._unscreened: dict[int, int] = {}
        self._wait_s = PUSHED_BACK_WAIT_S
        #: Per region code, pieces of (device ids, event times, values, first-offer times).
        self._held: dict[int, deque[tuple[npt.NDArray[Any], ...]]] = {}
        self._size = 0
        self._retry_at = 0.0

    @property
    def size(self) -> int:
        return self._size

    @property
    def handover_wait_ms(self) -> dict[int, int]:
        """Histogram (``scheduler.latency`` buckets) of how long the readings handed to
        ``screen`` had waited here, from their event time: the gateway's part of their
        detection latency (it hands over chunks after premium and its new readings, for
        as long as its loop's budget lasts, so a gateway short of time falls behind here
        first)."""
        return {int(b): int(self._handover_wait[b]) for b in np.flatnonzero(self._handover_wait)}

    @property
    def full(self) -> bool:
        return self.size >= self.max_readings

    def __bool__(self) -> bool:
        return self.size > 0

    def hold(
        self,
        res: IngestResult,
        ids: npt.NDArray[Any],
        ts: npt.NDArray[Any],
        values: npt.NDArray[Any],
        offered_ts: npt.NDArray[Any],
        now: float,
    ) -> None:
        if not res.pushed_back:
            return
        self.pushed_back += res.pushed_back
        self.pushed_back_readings += res.pushed_back
        i = res.pushed_back_index
        if not self._size:
            self._retry_at = now + self._wait_s
        self._add((ids[i], ts[i], values[i], offered_ts[i]), res.pushed_back_region)

    def defer_non_premium(
        self,
        registry: Registry,
        ids: npt.NDArray[Any],
        ts: npt.NDArray[Any],
        values: npt.NDArray[Any],
        offered_ts: npt.NDArray[Any],
    ) -> tuple[npt.NDArray[Any], ...]:
        """Hold the readings of every tier but premium (bound for their home region);
        returns the premium ones (and unknown devices, for ingest to dead-letter)."""
        return self._hold_non_premium(registry, (ids, ts, values, offered_ts), only_held=False)

    def queue_behind_held(
        self,
        registry: Registry,
        ids: npt.NDArray[Any],
        ts: npt.NDArray[Any],
        values: npt.NDArray[Any],
        offered_ts: npt.NDArray[Any],
    ) -> tuple[npt.NDArray[Any], ...]:
        """Hold new readings of every tier but premium behind what their region already
        holds, so a region takes its readings oldest first; returns the rest to offer now.

        Offered ahead of older held ones, new readings would reach screening first, and
        every device whose older readings are still held would look silent to the
        dropout sweep (which measures silence up to the newest reading screened)."""
        if not self._held:
            return ids, ts, values, offered_ts
        return self._hold_non_premium(registry, (ids, ts, values, offered_ts), only_held=True)

    def _hold_non_premium(
        self, registry: Registry, cols: tuple[npt.NDArray[Any], ...], only_held: bool
    ) -> tuple[npt.NDArray[Any], ...]:
        """Hold the non-premium readings of ``cols`` (of regions already holding some, with
        ``only_held``) behind their home region's; returns the rest."""
        rows = registry.lookup(cols[0])
        known = rows >= 0
        home = registry.home_region[np.maximum(rows, 0)].astype(np.intp)
        later = known & (registry.tier[np.maximum(rows, 0)] > 0)
        if only_held:
            later &= np.isin(home, np.fromiter(self._held, dtype=np.intp))
        # Rows picked by index, not by boolean mask: a mask as scattered as tiers and
        # regions are over devices costs numpy about ten times as much per column.
        held_i = np.flatnonzero(later)
        if held_i.size:
            held = tuple(c[held_i] for c in cols)
            held_home = home[held_i]
            if self._screen is not None:
                # Oldest first: screened a chunk at a time, a device's older reading in a
                # later chunk would count as screened already (its newer one went first).
                # A source passing readings on in order needs neither the sort nor the copy.
                ts = held[1]
                by_ts = None if in_time_order(ts) else np.argsort(ts, kind="stable")
                piece = (*held, held_home)
                self._to_screen.append(piece if by_ts is None else tuple(c[by_ts] for c in piece))
                _count(self._unscreened, held_home, 1)
            self._add(held, held_home)
            self.deferred += int(held_i.size)
        if held_i.size == later.size:
            return tuple(c[:0] for c in cols)
        if not held_i.size:
            return cols
        rest = np.flatnonzero(~later)
        return tuple(c[rest] for c in cols)

    def screen_waiting(self, now: float | None = None) -> int:
        """Hand readings held since to ``screen``, at most ``offer_readings`` a call, like
        a re-offer, so one call never holds up the premium arriving meanwhile; returns how
        many were handed over. Called once the readings offered beside them (premium
        among them) are in; ``now`` (default: the clock) times their wait here."""
        now = time.time() if now is None else now
        budget = self.offer_readings
        while self._screen is not None and self._to_screen and budget > 0:
            piece = self._to_screen[0]
            size = int(piece[0].shape[0])
            if size > budget:
                self._to_screen[0] = tuple(c[budget:] for c in piece)
                piece, size = tuple(c[:budget] for c in piece), budget
            else:
                self._to_screen.pop(0)
            self.screened += self._screen(piece[0], piece[1], piece[2])
            waited = bucket_of((now - piece[1].astype(np.float64)) * 1000.0)
            self._handover_wait += np.bincount(waited, minlength=N_BUCKETS)
            _count(self._unscreened, piece[-1], -1)
            budget -= size
        return self.offer_readings - budget

    def _add(
        self,
        cols: tuple[npt.NDArray[Any], ...],
        region: npt.NDArray[np.intp],
        front: bool = False,
    ) -> None:
        """Hold ``cols`` behind what each region holds (``front``: ahead of it, for
        readings offered again and handed back, which are older than the rest)."""
        counts = _count(self._held_count, region, 1)
        codes = np.flatnonzero(counts)
        for code in codes.tolist():
            mine = np.flatnonzero(region == code) if codes.size > 1 else None
            piece = cols if mine is None else tuple(c[mine] for c in cols)
            fifo = self._held.setdefault(code, deque())
            if front:
                fifo.appendleft(piece)
            else:
                fifo.append(piece)
        self._size += int(region.size)

    def _take(self, code: int, n: int) -> list[tuple[npt.NDArray[Any], ...]]:
        """Up to ``n`` of the oldest readings held for a region, in order."""
        fifo = self._held[code]
        taken: list[tuple[npt.NDArray[Any], ...]] = []
        while n > 0 and fifo:
            piece = fifo.popleft()
            size = int(piece[0].shape[0])
            if size > n:
                fifo.appendleft(tuple(c[n:] for c in piece))
                piece = tuple(c[:n] for c in piece)
                size = n
            taken.append(piece)
            n -= size
            self._size -= size
            self._held_count[code] -= size
        if not fifo:
            del self._held[code]
        return taken

    def offer_again(self, producer: Producer, now: float) -> tuple[int, int]:
        """Offer again the oldest readings held for regions open now, at most
        ``offer_readings`` split evenly between them; readings of regions still closed
        are not offered at all."""
        # Held readings are screened before they are offered again (admitted unscreened
        # first, they would be screened twice), but only the newest of a region wait
        # for that: its older ones were handed to screening already and go now. Waiting
        # until none of any region was left to hand over starved the re-offers of a
        # gateway behind its schedule, which defers new readings faster than it hands
        # them over a chunk a loop: at 450,000/s offered, 43,362 non-premium readings
        # were admitted in 13 s of offering, the workers' drain read 0 with empty
        # queues, and the held-screening budget (earned from that drain) shrank to a
        # sixth of the devices.
        room = {c: self._held_count[c] - self._unscreened.get(c, 0) for c in self._held}
        if not self._size or now < self._retry_at or not any(n > 0 for n in room.values()):
            return 0, 0
        closed = producer.closed()
        ready = [c for c in self._held if room[c] > 0 and (closed is None or not closed[c])]
        if not ready:
            self._wait_s = min(2 * max(self._wait_s, PUSHED_BACK_WAIT_S), PUSHED_BACK_MAX_WAIT_S)
            self._retry_at = now + self._wait_s
            return 0, 0
        # Split evenly: region i of k gets (offer_readings + i) // k, together the whole budget.
        k = len(ready)
        pieces = [
            p
            for i, code in enumerate(ready)
            for p in self._take(code, min(room[code], (self.offer_readings + i) // k))
        ]
        if not pieces:  # a budget smaller than the open regions: the first gets one
            pieces = self._take(ready[0], 1)
        # One piece (one region, taken whole or in part) needs no copy: nothing held is
        # changed in place, only sliced or replaced.
        ids, ts, values, offered_ts = (
            pieces[0]
            if len(pieces) == 1
            else (np.concatenate([p[k] for p in pieces]) for k in range(len(pieces[0])))
        )
        res = producer.ingest_columns(ids, ts, values, now_ts=now, offered_ts=offered_ts)
        if not res.pushed_back:
            self._wait_s = 0.0  # all taken: carry on with the next chunk held at once
        elif res.accepted:
            self._wait_s = PUSHED_BACK_WAIT_S
        else:
            self._wait_s = min(2 * max(self._wait_s, PUSHED_BACK_WAIT_S), PUSHED_BACK_MAX_WAIT_S)
        self.pushed_back += res.pushed_back
        if res.pushed_back:
            i = res.pushed_back_index
            back = (ids[i], ts[i], values[i], offered_ts[i])
            self._add(back, res.pushed_back_region, front=True)
        self._retry_at = now + self._wait_s
        return res.accepted, res.rejected


def _count(counts: dict[int, int], region: npt.NDArray[np.intp], sign: int) -> npt.NDArray[np.intp]:
    """Add ``sign`` per reading of each region code in ``region`` to ``counts``; returns
    the readings per region code (a bincount: region codes are few and small, and a
    count needs no sort)."""
    n = np.bincount(region)
    for code in np.flatnonzero(n).tolist():
        counts[code] = counts.get(code, 0) + sign * int(n[code])
    return n
