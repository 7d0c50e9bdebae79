"""Detector: a per-device streaming anomaly screen over columnar batches.

``screen`` takes a batch of readings for many devices (one metric or several) with their
states, and returns every reading's verdict and the updated states; every reading costs
O(1) work, in one compiled pass over the batch. Its parts, one noun each:

- ``scheduler.detector_step``: the per-reading model (what is predicted, how a residual
  is judged, when an episode opens and ends);
- ``scheduler.detector_kernel``: that step run over a batch's readings, compiled;
- ``scheduler.detector_state``: the state vector's layout and its stored bytes;
- ``scheduler.detector_config``: the tuning, ``DetectorConfig``;
- ``scheduler.anomaly_kind``: the kind codes of a verdict;
- ``scheduler.dropout_sweep``: devices silent past their limit, found between batches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from scheduler.anomaly_kind import KIND_CODES, KIND_NAMES
from scheduler.detector_config import DetectorConfig
from scheduler.detector_kernel import screen_cells, tuning
from scheduler.detector_state import (
    STATE_BYTES,
    K,
    fresh_states,
    pack_states,
    storable,
    unpack_states,
)
from scheduler.dropout_sweep import find_dropouts
from scheduler.errors import InvalidBatch

# Besides its own names, the detector's parts that tests and benches reach as one
# namespace (``from scheduler import detection as det``, then ``det.fresh_states``):
# 74 attribute uses in six files other developers edit. New code imports a part from
# the module that owns it.
__all__ = [
    "KIND_CODES",
    "KIND_NAMES",
    "STATE_BYTES",
    "DetectorConfig",
    "K",
    "ScreenResult",
    "find_dropouts",
    "fresh_states",
    "pack_states",
    "screen",
    "storable",
    "unpack_states",
]

F64 = npt.NDArray[np.float64]
I8 = npt.NDArray[np.int8]
IDX = npt.NDArray[np.intp]
BOOL = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class ScreenResult:
    """Per-reading verdicts (shape of ``value``) and the updated states (shape of the input).

    ``expected`` is the predicted value and ``band`` the half-width around it past which a
    single reading is a spike or dip (NaN for missing readings).
    """

    states: F64
    score: F64
    kind: I8
    alert: BOOL
    expected: F64
    band: F64


def screen(
    states: F64, device_index: IDX, ts: F64, value: F64, config: DetectorConfig
) -> ScreenResult:
    """Screen a batch: ``states`` rows are devices, ``device_index`` maps readings to rows.

    ``value`` is ``(r,)`` for one metric or ``(r, m)`` for m metrics, with ``states`` of
    width ``m * K``; a NaN value is a missing reading and leaves its state untouched.
    Readings of one device are taken in time order whatever the batch order. The input
    ``states`` is not modified.
    """
    values = value.reshape(-1, 1) if value.ndim == 1 else value
    n_readings, metrics = values.shape
    if states.ndim != 2 or states.shape[1] != metrics * K:
        raise InvalidBatch(f"states width {states.shape} does not fit {metrics} metric(s) of {K}")
    if device_index.shape != (n_readings,) or ts.shape != (n_readings,):
        raise InvalidBatch("device_index, ts and value lengths differ")
    if n_readings and (device_index.min() < 0 or device_index.max() >= states.shape[0]):
        raise InvalidBatch("device_index points outside states")

    cells = np.array(states.reshape(-1, K), dtype=np.float64, order="C")
    score = np.zeros(values.shape, dtype=np.float64)
    expected = np.full(values.shape, np.nan)
    band = np.full(values.shape, np.nan)
    kind = np.zeros(values.shape, dtype=np.int8)
    alert = np.zeros(values.shape, dtype=np.bool_)

    flat_values = values.reshape(-1)
    present = np.flatnonzero(~np.isnan(flat_values))
    if present.size:
        cell_row = (device_index.astype(np.intp)[:, None] * metrics + np.arange(metrics)).reshape(
            -1
        )[present]
        cell_ts = np.repeat(ts.astype(np.float64), metrics)[present]
        if not np.isfinite(cell_ts).all():
            raise InvalidBatch("a reading's ts is not a finite number")
        screen_cells(
            cells,
            cell_row,
            cell_ts,
            np.ascontiguousarray(flat_values[present], dtype=np.float64),
            present,
            tuning(config),
            score.reshape(-1),
            kind.reshape(-1),
            alert.reshape(-1),
            expected.reshape(-1),
            band.reshape(-1),
        )

    shape = value.shape
    return ScreenResult(
        states=cells.reshape(states.shape),
        score=score.reshape(shape),
        kind=kind.reshape(shape),
        alert=alert.reshape(shape),
        expected=expected.reshape(shape),
        band=band.reshape(shape),
    )
