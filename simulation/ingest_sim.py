"""Ingest on the virtual clock: split arrivals into placement cohorts, route, hold, push back.

Every accepted reading is published twice, as the producer does: to its
processing region's screen queue and to its routine queue. Two holds:

- no allowed region is healthy (placement answers −1): the reading waits at
  ingest, unscreened, until a region it may go to is healthy again;
- the routine backlog of its region is past the cap: ingest pushes back on the
  routine copy only. The screen copy is still published, so detection never
  waits behind a routine backlog (issue 4); the routine copy waits at ingest.
"""

from __future__ import annotations

import numpy as np

from scheduler.placement import PlacementPolicy
from simulation.fleet import Cohorts
from simulation.trace import CLASSES, SCREEN, STANDARD, Trace


def _cell_bounds(coh: Cohorts) -> tuple[np.ndarray, np.ndarray]:
    """Each cohort's [lo, hi) slice of its (region, tier) cell, so whole readings split exactly."""
    home, tier = coh.home_region.astype(np.intp), coh.tier.astype(np.intp)
    hi = np.zeros(len(coh))
    for k in range(len(coh)):
        same = (home[: k + 1] == home[k]) & (tier[: k + 1] == tier[k])
        later = (home[k + 1 :] == home[k]) & (tier[k + 1 :] == tier[k])
        hi[k] = 1.0 if not later.any() else coh.share_of_cell[: k + 1][same].sum()
    lo = hi - coh.share_of_cell
    return np.where(lo < 1e-12, 0.0, lo), hi


class Ingest:
    def __init__(
        self, cohorts: Cohorts, cohort_class: np.ndarray, placement: PlacementPolicy, n_regions: int
    ) -> None:
        self.coh = cohorts
        self.home = cohorts.home_region.astype(np.intp)
        self.tier = cohorts.tier.astype(np.intp)
        self.cohort_class = cohort_class
        self.placement = placement
        self.n_regions = n_regions
        self.lo, self.hi = _cell_bounds(cohorts)
        #: Held unscreened (no allowed healthy region) and screened (routine pushed back).
        self.unscreened = np.zeros(len(cohorts))
        #: Push back whole readings, unscreened (the runtime's admission control), rather
        #: than only their routine copy.
        self.hold_unscreened = False
        self.screened = np.zeros(len(cohorts))

    @property
    def held(self) -> float:
        return float(self.unscreened.sum() + self.screened.sum())

    def route(
        self,
        i: int,
        cell: np.ndarray,
        dest: np.ndarray,
        queue: np.ndarray,
        cap: float | np.ndarray,
        tr: Trace,
    ) -> np.ndarray:
        """Readings entering each region's queues this step, shape (regions, classes).

        ``cap``: standard readings queued past which a region pushes back (or per region).
        """
        x = cell[self.home, self.tier]
        new = np.floor(x * self.hi) - np.floor(x * self.lo)
        blocked = dest < 0
        go = ~blocked
        pushed_back = go & (self.cohort_class == STANDARD)
        caps = np.broadcast_to(np.asarray(cap, dtype=np.float64), (self.n_regions,))
        pushed_back &= queue[np.maximum(dest, 0), STANDARD] > caps[np.maximum(dest, 0)]
        if self.hold_unscreened:
            # As the runtime's producer does: a pushed-back reading is not published at all
            # (neither copy) until it is taken, and the gateway offers what it holds again
            # only as far as the region has room under its cap, oldest first.
            taken = go & ~pushed_back
            d = np.maximum(dest, 0)
            room = np.maximum(caps - queue[:, STANDARD], 0.0)
            held_std = np.bincount(
                d, weights=np.where(taken & (self.cohort_class == STANDARD), self.unscreened, 0.0),
                minlength=self.n_regions,
            )  # fmt: skip
            frac = np.where(held_std > 0, np.minimum(1.0, room / np.maximum(held_std, 1.0)), 1.0)
            release = np.where(
                self.cohort_class == STANDARD, np.floor(self.unscreened * frac[d]), self.unscreened
            )
            release = np.where(taken, release, 0.0)
            to_screen = np.where(taken, new, 0.0) + release
            to_routine = to_screen
            self.unscreened = self.unscreened + np.where(taken, 0.0, new) - release
            held_back = float(np.where(go, self.unscreened, 0.0).sum())
        else:
            to_screen = np.where(go, new + self.unscreened, 0.0)
            to_routine = np.where(go & ~pushed_back, new + self.unscreened + self.screened, 0.0)
            self.screened = np.where(
                pushed_back, self.screened + new + self.unscreened, self.screened
            )
            self.screened = np.where(go & ~pushed_back, 0.0, self.screened)
            self.unscreened = np.where(blocked, self.unscreened + new, 0.0)
            held_back = float(self.screened.sum())
        tr.buffered[i] = self.held
        tr.backpressured[i] = held_back

        n_c = len(CLASSES)
        d = np.maximum(dest, 0)
        flat = np.bincount(
            d * n_c + self.cohort_class, weights=to_routine, minlength=self.n_regions * n_c
        ).reshape(self.n_regions, n_c)
        flat[:, SCREEN] = np.bincount(d, weights=to_screen, minlength=self.n_regions)
        self._account(i, dest, go, to_screen, tr)
        return flat

    def _account(
        self, i: int, dest: np.ndarray, go: np.ndarray, amount: np.ndarray, tr: Trace
    ) -> None:
        """Residency, home share and bytes moved, counted once per reading (its screen copy)."""
        allowed_bit = (self.coh.allowed_mask.astype(np.int64) >> np.maximum(dest, 0)) & 1
        tr.residency_violations += float(amount[go & (allowed_bit == 0)].sum())
        tr.placed_home[i] = amount[go & (dest == self.home)].sum()
        tr.placed[i] = amount[go].sum()
        size = self.placement.config.reading_bytes
        moved = go & (dest != self.home)
        tr.moved_bytes[i] = amount[moved].sum() * size
        price = self.placement.cost_per_gb
        tr.moved_cost[i] = (amount[moved] * size / 1e9 * price[self.home[moved], dest[moved]]).sum()
        rr_bytes = amount[go, None] * tr.rr_dest_share[go] * size
        rr_away = np.arange(self.n_regions)[None, :] != self.home[go, None]
        tr.rr_moved_bytes[i] = float((rr_bytes * rr_away).sum())
        tr.rr_moved_cost[i] = float((rr_bytes / 1e9 * price[self.home[go]] * rr_away).sum())
