"""Screening of readings held back by admission control: its budget, and what it picks.

A reading pushed back (or held by its gateway behind older held ones) waits for
routine processing, and used to wait for screening too, so its detection latency grew
with the overload. It is screened at once instead, from a budget of its own: each
non-premium reading a region admits earns ``per_admitted`` readings of screening while
held. Admission follows the region's measured drain, so the budget follows it too, and
screening of held readings takes a bounded share of the region's slot time (its queue,
``{region}.screen``, ranks below premium either way):

    share = per_admitted * screen_cost / (per_admitted * screen_cost + routine_cost)

``bench/screen_cost.py`` measures screening at about twice routine processing's cost
per reading (7.1 vs 3.6 us): screening is mostly the detector states' MGET and MSET.
Screening every held reading at 2x capacity cannot fit (it alone would take 1.2 slots),
so past the budget a sample of devices is screened while held: whole devices, in a
fixed order, so the same devices keep fast detection and every device's readings reach
screening complete and in time order (a device screened in part would show the
detector gaps, i.e. false dropouts). The other devices' readings are screened when
admitted, as before. A reading is screened once: early, or when admitted, never both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

#: Share of a region's non-premium slot time screening of held readings may take.
HELD_SCREEN_SHARE = 0.5
#: Screening's cost per reading over routine processing's (bench/screen_cost.py).
SCREEN_TO_ROUTINE_COST = 2.0
#: Readings screened while held per non-premium reading admitted: the share above.
PER_ADMITTED = HELD_SCREEN_SHARE / (1.0 - HELD_SCREEN_SHARE) / SCREEN_TO_ROUTINE_COST
#: Unspent budget fades over this long (seconds): enough to carry a gateway's chunk
#: between admission rounds, too short to bank a quiet period for a burst.
BUDGET_WINDOW_S = 1.0


@dataclass
class HeldScreenBudget:
    """Per region code, readings that may be screened while held (earned on admission).

    A balance: admissions add to it, screening spends it, and it may be overdrawn by
    what the region earned over the last ``window_s``. Gateways hand over held readings
    in uneven lumps; the overdraft keeps a lump from cutting the devices being screened
    (a device dropped from screening while held cannot rejoin until its held readings
    are admitted), while spending still follows earning over time. Unspent credit fades
    over ``window_s``; a debt does not.
    """

    per_admitted: float = PER_ADMITTED
    window_s: float = BUDGET_WINDOW_S
    _balance: dict[int, float] = field(default_factory=dict)
    _earned: dict[int, float] = field(default_factory=dict)
    _at_ts: dict[int, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.per_admitted < 0 or self.window_s <= 0:
            raise ValueError(f"need per_admitted >= 0 and window_s > 0, got {self}")

    def earn(self, region: int, admitted: int, now_ts: float) -> None:
        """``admitted`` non-premium readings of ``region`` were admitted at ``now_ts``."""
        if admitted > 0:
            self._fade(region, now_ts)
            self._balance[region] += self.per_admitted * admitted
            self._earned[region] += self.per_admitted * admitted

    def available(self, region: int, now_ts: float) -> float:
        """Readings ``region`` may screen while held now (its balance plus the overdraft)."""
        self._fade(region, now_ts)
        return self._balance[region] + self._earned[region]

    def spend(self, region: int, readings: int, now_ts: float) -> None:
        self._fade(region, now_ts)
        self._balance[region] -= readings

    def _fade(self, region: int, now_ts: float) -> None:
        elapsed = max(0.0, now_ts - self._at_ts.get(region, now_ts))
        fade = math.exp(-elapsed / self.window_s)
        balance = self._balance.get(region, 0.0)
        self._balance[region] = balance * fade if balance > 0 else balance
        self._earned[region] = self._earned.get(region, 0.0) * fade
        self._at_ts[region] = now_ts


def device_order(device_id: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """A fixed pseudo-random order of devices (a multiplicative hash of the id): past the
    budget the same devices keep being screened while held, so none is left with gaps."""
    return np.asarray(device_id, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)


def pick_held(
    device_row: npt.NDArray[np.int64],
    order: npt.NDArray[np.uint64],
    clean: npt.NDArray[np.bool_],
    budget: int,
) -> npt.NDArray[np.intp]:
    """Which held readings to screen now, at most ``budget``; indexes into the inputs.

    Whole devices, never part of one: a device whose held readings were screened only in
    part would show the detector a gap (a false dropout), and its skipped readings could
    not be screened later without going back in time. So within the budget, devices go
    in their fixed ``order`` (``device_order``), each with all its readings here; only
    ``clean`` devices (none of their readings waiting unscreened) may take part.
    """
    take = np.flatnonzero(clean)
    if take.size <= budget:
        return take
    rows = device_row[take]
    devices, first, counts = np.unique(rows, return_index=True, return_counts=True)
    by_order = np.argsort(order[take][first], kind="stable")
    fits = np.cumsum(counts[by_order]) <= budget
    chosen = devices[by_order[fits]]
    return take[np.isin(rows, chosen)]
