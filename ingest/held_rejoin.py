"""Devices rejoining the held-screening sample: their newer held readings wait here.

A device takes part in screening while held only while none of its readings waits held
unscreened (``ingest.screened_marks``): its newer readings must not reach screening
before its older ones. Under a sustained overload a device dropped from the sample
always has readings held unscreened (new ones keep arriving behind the old), so without
a way back it would stay out for the whole overload, however the budget grew again.

So a device in the sample that is not clean rejoins: its readings held from then on are
kept here (copies, in the producer's memory) instead of being left unscreened. Its older
unscreened readings are screened when admitted, as any; once the last of them is
admitted, what it kept here and was not admitted meanwhile is screened in one copy, in
time order, after them, and the device is clean again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from ingest.screened_marks import ScreenedMarks
from scheduler import defaults

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
#: Held readings of one region: registry rows, ids, event times, values, tier codes.
Held = tuple[I64, npt.NDArray[np.uint64], F64, F64, npt.NDArray[np.integer]]


@dataclass
class RejoinBuffer:
    """Held readings of rejoining devices, per region, up to ``max_readings`` in all."""

    n_rows: int
    max_readings: int = defaults.HELD_REJOIN_MAX_READINGS
    _pieces: dict[int, list[Held]] = field(default_factory=dict)
    _size: int = 0

    def __post_init__(self) -> None:
        #: Per registry row: rejoining; newest event time kept here.
        self.rejoining = np.zeros(self.n_rows, dtype=np.bool_)
        self.kept_to = np.full(self.n_rows, -np.inf)

    @property
    def size(self) -> int:
        return self._size

    def keep(self, region: int, held: Held, rejoin: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
        """Keep the readings of ``held`` marked ``rejoin`` (devices in the sample but not
        clean, or rejoining already) while there is room; whole devices only. Returns
        which readings of ``held`` are kept here (or were already)."""
        rows, t = held[0], held[2]
        # Offered again and handed back again, a kept reading comes back: kept once.
        already = self.rejoining[rows] & (t <= self.kept_to[rows])
        want = rejoin & ~already
        if want.any():
            room = self.max_readings - self._size
            if int(want.sum()) > room:
                # No room for all: only devices already rejoining (they must not skip a
                # reading), then none.
                want &= self.rejoining[rows]
                if int(want.sum()) > room:
                    want[:] = False
            if want.any():
                self._pieces.setdefault(region, []).append(tuple(c[want] for c in held))  # type: ignore[arg-type]
                self.rejoining[rows[want]] = True
                np.maximum.at(self.kept_to, rows[want], t[want])
                self._size += int(want.sum())
        return want | already

    def ready(self, region: int, marks: ScreenedMarks) -> Held | None:
        """The kept readings of the region's devices whose older unscreened readings are
        all admitted now, not admitted themselves, oldest first; those devices are no
        longer rejoining. Kept readings admitted meanwhile (screened when admitted) are
        let go."""
        pieces = self._pieces.get(region)
        if not pieces:
            return None
        rows, dev, t, v, tier = (np.concatenate([p[k] for p in pieces]) for k in range(5))
        admitted_to = marks.admitted_to(rows)
        gone = t <= admitted_to
        done = marks.clean(rows) & ~gone
        keep = ~gone & ~done
        finished = rows[marks.clean(rows)]
        self.rejoining[finished] = False
        self.kept_to[finished] = -np.inf
        self._size -= int(rows.size - keep.sum())
        if keep.any():
            self._pieces[region] = [(rows[keep], dev[keep], t[keep], v[keep], tier[keep])]
        else:
            del self._pieces[region]
        if not done.any():
            return None
        order = np.argsort(t[done], kind="stable")
        return tuple(c[done][order] for c in (rows, dev, t, v, tier))  # type: ignore[return-value]

    def regions(self) -> list[int]:
        return list(self._pieces)

    def drop_all(self) -> list[Held]:
        """Let every kept reading go (a new registry snapshot); returns them."""
        out = [p for ps in self._pieces.values() for p in ps]
        self._pieces.clear()
        self._size = 0
        self.rejoining[:] = False
        self.kept_to[:] = -np.inf
        return out
