"""Per device, what a producer sent to screening while held, and what it holds unscreened.

How a re-offer says "already screened" without the caller saying anything: a held
reading screened early raises its device's mark to its event time, and a reading
offered later whose event time is not past its device's mark is admitted to routine
processing without a screening copy. Devices never screened while held have no mark,
so nothing changes for them.

A device may take part in screening while held only while none of its readings waits
unscreened (held back without a copy, and not admitted since): otherwise its newer
readings would reach screening before its older ones.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from scheduler.registry import Registry

F64 = npt.NDArray[np.float64]


class ScreenedMarks:
    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        n = len(registry)
        #: Newest event time sent to screening while held; newest held back without a
        #: copy; newest admitted (per registry row).
        self._screened_to, self._unscreened_to, self._admitted_to = (
            np.full(n, -np.inf) for _ in range(3)
        )

    def rebind(self, registry: Registry) -> None:
        """Follow a new registry snapshot: marks move with their devices' ids."""
        if registry is self._registry:
            return
        old, cols = self._registry, (self._screened_to, self._unscreened_to, self._admitted_to)
        seen = np.flatnonzero(np.any([c > -np.inf for c in cols], axis=0))
        rows = registry.lookup(old.device_id[seen])
        kept = rows >= 0
        fresh = []
        for c in cols:
            moved = np.full(len(registry), -np.inf)
            moved[rows[kept]] = c[seen[kept]]
            fresh.append(moved)
        self._registry = registry
        self._screened_to, self._unscreened_to, self._admitted_to = fresh

    def screened(self, rows: npt.NDArray[np.int64], ts: F64) -> npt.NDArray[np.bool_]:
        """True where a reading is no newer than what its device sent to screening early."""
        return ts <= self._screened_to[rows]

    def clean(self, rows: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
        """True for devices none of whose readings waits held back unscreened."""
        return self._unscreened_to[rows] <= self._admitted_to[rows]

    def admitted_to(self, rows: npt.NDArray[np.int64]) -> F64:
        """Newest event time admitted per device (-inf: none)."""
        return self._admitted_to[rows]

    def sent_to_screening(self, rows: npt.NDArray[np.int64], ts: F64) -> None:
        np.maximum.at(self._screened_to, rows, ts)

    def held_unscreened(self, rows: npt.NDArray[np.int64], ts: F64) -> None:
        np.maximum.at(self._unscreened_to, rows, ts)

    def admitted(self, rows: npt.NDArray[np.int64], ts: F64) -> None:
        np.maximum.at(self._admitted_to, rows, ts)
