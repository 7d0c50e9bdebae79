"""Per device, the newest event time a producer sent to screening while it was held.

How a re-offer says "already screened" without the caller saying anything: a held
reading screened early raises its device's mark to its event time, and a reading
offered later whose event time is not past its device's mark is admitted to routine
processing without a screening copy. The same holds for a device's older readings that
screening skipped (a newer one went ahead; screening takes a device's readings in time
order). Devices never screened while held have no mark, so nothing changes for them.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from scheduler.registry import Registry


class ScreenedMarks:
    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        self._to_ts = np.full(len(registry), -np.inf)

    def rebind(self, registry: Registry) -> None:
        """Follow a new registry snapshot: marks move with their devices' ids."""
        if registry is self._registry:
            return
        marks = np.full(len(registry), -np.inf)
        old = self._registry
        seen = np.flatnonzero(self._to_ts > -np.inf)
        rows = registry.lookup(old.device_id[seen])
        kept = rows >= 0
        marks[rows[kept]] = self._to_ts[seen[kept]]
        self._registry, self._to_ts = registry, marks

    def of(self, rows: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        """Each row's mark (-inf where its device was never screened while held)."""
        return self._to_ts[rows]

    def screened(
        self, rows: npt.NDArray[np.int64], ts: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.bool_]:
        """True where a reading is no newer than what its device sent to screening early."""
        return ts <= self._to_ts[rows]

    def raise_to(self, rows: npt.NDArray[np.int64], ts: npt.NDArray[np.float64]) -> None:
        np.maximum.at(self._to_ts, rows, ts)
