"""Detector kernel: a batch's readings stepped through their states, compiled.

``scheduler.detection.screen`` hands the kernel every present reading of a batch with
the state row (a (device, metric) cell) it belongs to; the kernel groups the readings by
cell, puts each cell's in time order and steps them one after another
(``scheduler.detector_step.step``), rounding the float32 fields after each reading as
storage does. Compiled once, at import (``scheduler.jit``), for one signature: a call
never compiles.
"""

from __future__ import annotations

import dataclasses
from collections import namedtuple
from collections.abc import Callable
from functools import cache
from typing import Any

import numpy as np
import numpy.typing as npt
from numba import types

from scheduler import anomaly_kind, detector_config, detector_state, detector_step, jit, seasonal
from scheduler.detector_config import DetectorConfig
from scheduler.detector_state import NARROW, PROFILE_HOURS, SEASON0, K
from scheduler.detector_step import step, tail_factors

F64 = npt.NDArray[np.float64]
I8 = npt.NDArray[np.int8]
IDX = npt.NDArray[np.intp]
BOOL = npt.NDArray[np.bool_]

#: The first column stored as float32.
_NARROW0 = NARROW.start

_TUNING_FIELDS = tuple(f.name for f in dataclasses.fields(DetectorConfig))
#: ``DetectorConfig`` as the kernel reads it: the same fields, every one a float (a
#: namedtuple is what numba takes by field name; mypy wants its fields spelled out).
Tuning: Any = namedtuple("Tuning", _TUNING_FIELDS)  # type: ignore[misc]
_TUNING = types.NamedUniTuple(types.float64, len(_TUNING_FIELDS), Tuning)  # type: ignore[no-untyped-call]


@cache
def tuning(config: DetectorConfig) -> Any:
    """``config`` as the kernel takes it."""
    return Tuning(*(float(v) for v in dataclasses.astuple(config)))


@jit.compiled
def _time_order(cell_row: IDX, ts: F64, cells: int) -> tuple[IDX, IDX]:
    """Reading positions grouped by cell, each cell's in time order (batch order among
    equal ts), and each cell's bounds in them (``cells + 1``)."""
    bounds = np.zeros(cells + 1, dtype=np.intp)
    for row in cell_row:
        bounds[row + 1] += 1
    bounds = np.cumsum(bounds)
    order = np.empty(cell_row.size, dtype=np.intp)
    fill = bounds[:-1].copy()
    for j, row in enumerate(cell_row):
        order[fill[row]] = j
        fill[row] += 1
    for row in range(cells):
        mine = order[bounds[row] : bounds[row + 1]]
        for i in range(1, mine.size):
            if ts[mine[i]] < ts[mine[i - 1]]:
                mine[:] = mine[np.argsort(ts[mine], kind="mergesort")]
                break
    return order, bounds


@jit.compiled
def _round_stored(st: F64, at: seasonal.Position, every: bool) -> None:
    """Round ``st``'s float32 fields as storage will: all of them, or those a step changes."""
    hour_a, hour_b, _, day = at
    if every:
        for col in range(_NARROW0, K):
            st[col] = np.float32(st[col])
        return
    for col in range(_NARROW0, SEASON0):
        st[col] = np.float32(st[col])
    for col in (SEASON0 + hour_a, SEASON0 + hour_b, SEASON0 + PROFILE_HOURS + day):
        st[col] = np.float32(st[col])


#: ``screen_cells``'s arguments: states, each reading's state row, ts and value and where
#: its verdict goes; the tuning; the verdicts.
_SIGNATURE = types.void(
    types.float64[:, ::1],
    types.intp[::1],
    types.float64[::1],
    types.float64[::1],
    types.intp[::1],
    _TUNING,
    types.float64[::1],
    types.int8[::1],
    types.boolean[::1],
    types.float64[::1],
    types.float64[::1],
)
ScreenCells = Callable[[F64, IDX, F64, F64, IDX, Any, F64, I8, BOOL, F64, F64], None]


def _build(depends_on: str) -> ScreenCells:
    @jit.kernel(_SIGNATURE)
    def screen_cells(
        cells: F64,
        cell_row: IDX,
        ts: F64,
        value: F64,
        out_at: IDX,
        c: Any,
        score: F64,
        kind: I8,
        alert: BOOL,
        expected: F64,
        band: F64,
    ) -> None:
        _ = depends_on  # in numba's cache key (scheduler.jit)
        tails = tail_factors(c)
        order, bounds = _time_order(cell_row, ts, cells.shape[0])
        for row in range(cells.shape[0]):
            st = cells[row]
            for i in range(bounds[row], bounds[row + 1]):
                j = order[i]
                at = seasonal.position(ts[j])
                verdict = step(st, ts[j], value[j], at, c, tails)
                # Round as storage will after every reading, so a state is the same whether
                # a stream went through Redis between its batches or not, wherever they
                # split; fields a step leaves alone were rounded after the cell's first.
                _round_stored(st, at, i == bounds[row])
                at_out = out_at[j]
                score[at_out], kind[at_out], alert[at_out], expected[at_out], band[at_out] = verdict

    return screen_cells


#: Steps each reading through its row of ``cells`` in place, a row's readings in time order,
#: and writes each one's verdict at its ``out_at``.
screen_cells = _build(
    jit.fingerprint(anomaly_kind, detector_config, detector_state, detector_step, jit, seasonal)
)
