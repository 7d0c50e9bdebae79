"""Dropout sweep: devices silent past their usual long interval, each silence reported once.

The screen (``scheduler.detection``) reports a silence on the reading that ends it; this
sweep reports it while it lasts, and the state's dropout mark keeps the two from both
reporting the same silence.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from scheduler.detector_config import DetectorConfig
from scheduler.detector_state import COUNT, DROPMARK, GAP, LASTTS, K

F64 = npt.NDArray[np.float64]
IDX = npt.NDArray[np.intp]


@dataclass(frozen=True)
class Dropouts:
    """Devices (state rows) silent past their limit, newly reported, with their silence."""

    index: IDX
    silence_s: F64


def find_dropouts(states: F64, now_ts: float | F64, config: DetectorConfig) -> Dropouts:
    """Sweep device rows for silence past ``dropout_factor`` x their usual long interval.

    ``now_ts`` is when silence is measured up to: one instant, or one per row.

    A device is silent when its newest reading over all metrics is that old; its interval
    is its fastest metric's. Reported rows are marked in ``states`` (in place) so the same
    silence is reported once, here or by ``screen`` when the device returns, never twice.
    """
    n_devices = states.shape[0]
    cells = states.reshape(n_devices, -1, K)
    last_ts = np.nanmax(np.where(cells[:, :, COUNT] > 0, cells[:, :, LASTTS], -np.inf), axis=1)
    # A metric whose interval is not known yet (NaN: no forward gap seen) is not judged.
    usable = (cells[:, :, COUNT] >= config.dropout_warmup_readings) & np.isfinite(cells[:, :, GAP])
    gap_s = np.min(np.where(usable, np.exp(cells[:, :, GAP]), np.inf), axis=1)
    limit = np.maximum(config.dropout_factor * gap_s, config.dropout_min_s)
    silence = now_ts - last_ts
    already = np.any(cells[:, :, DROPMARK] == cells[:, :, LASTTS], axis=1)
    hit = np.flatnonzero(np.isfinite(gap_s) & (silence > limit) & ~already)
    cells[hit, :, DROPMARK] = cells[hit, :, LASTTS]
    return Dropouts(index=hit, silence_s=silence[hit])
