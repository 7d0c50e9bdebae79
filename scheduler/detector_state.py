"""Detector state: the layout of one (device, metric) state vector and its stored bytes.

Each (device, metric) carries a fixed-width state vector (``STATE_FIELDS``, stored in
``STATE_BYTES`` = 256 bytes: float64 where precision matters, float32 elsewhere) that
lives in Redis between batches; ``pack_states``/``unpack_states`` turn a whole batch's
states into bytes in one go so an adapter needs one MGET and one MSET. A device's row is
its metrics' vectors side by side (``metrics * K`` wide).
"""

from __future__ import annotations

import itertools
from typing import cast

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
U8 = npt.NDArray[np.uint8]

#: The seasonal profile's bins (``scheduler.seasonal``): hours of the day, days of the week.
PROFILE_HOURS = 24
PROFILE_DAYS = 7
PROFILE_FIELDS: tuple[str, ...] = (
    *(f"hour_{h:02d}" for h in range(PROFILE_HOURS)),
    *(f"weekday_{d}" for d in range(PROFILE_DAYS)),
)
#: The layout of one (device, metric) state vector; a device's blob is these x metrics.
#: Stored as float64 (times, and values compared with or accumulated at the signal's own
#: precision: a repeat must equal the last value exactly, a level of 1e6 must resolve noise
#: of 0.01); the fields after them (rates, counts, evidence, seasonal offsets) as float32.
_WIDE_FIELDS: tuple[str, ...] = (
    "count",  # readings seen
    "level",  # clipped EWMA of the deseasonalised value
    "trend",  # its damped per-reading slope (Holt), so a smooth cycle is not lagged
    "slow_mean",  # slow EWMA of the deseasonalised value: what the season is measured from
    "fast_level",  # unclipped fast EWMA, where the level re-anchors after a shift
    "last_value",
    "last_ts",
    "episode_start_ts",
    "dropout_mark_ts",  # last_ts of the silence already reported by find_dropouts
)
STATE_FIELDS: tuple[str, ...] = (
    *_WIDE_FIELDS,
    "scale",  # EWMA of the clipped absolute residual
    "spread",  # slow EWMA of |value - slow_mean|: the signal's own scale
    "resolution",  # smallest non-zero step between consecutive values seen
    "tail_z",  # tracked 99th percentile of |normalised residual|
    "far_tail_z",  # tracked 99.9th percentile of it: how far this device's bursts reach
    "cusum_pos",
    "cusum_neg",
    "run_pos",  # readings since cusum_pos last rose past evidence_floor
    "run_neg",
    "flat_run",  # consecutive readings equal to the one before
    "flat_max",  # longest run of repeats seen
    "gap_log_s",  # tracked 99th percentile of log(seconds between readings)
    "in_episode",
    "episode_kind",  # the kind that opened the current episode
    "normal_run",  # consecutive normal readings inside an episode
    *PROFILE_FIELDS,
)
K = len(STATE_FIELDS)
#: Column of each field in a state vector, in ``STATE_FIELDS`` order; the seasonal
#: profile's fields start at ``SEASON0``.
(
    COUNT,
    LEVEL,
    TREND,
    SLOW,
    FAST,
    LASTV,
    LASTTS,
    EPSTART,
    DROPMARK,
    SCALE,
    SPREAD,
    RES,
    TAIL,
    FARTAIL,
    CPOS,
    CNEG,
    RPOS,
    RNEG,
    FLAT,
    FLATMAX,
    GAP,
    INEP,
    EPKIND,
    NORMRUN,
) = range(K - len(PROFILE_FIELDS))
SEASON0 = K - len(PROFILE_FIELDS)

#: |z| of a standard Gaussian exceeded 1 % of the time: the tail a normal device shows.
GAUSS_TAIL_Z = 2.576
#: The same at 99.9 %.
GAUSS_FAR_Z = 3.291

_WIDE = slice(0, len(_WIDE_FIELDS))
#: Columns of the fields stored as float32.
NARROW = slice(len(_WIDE_FIELDS), K)
_CELL = np.dtype(
    [("wide", "<f8", (len(_WIDE_FIELDS),)), ("narrow", "<f4", (K - len(_WIDE_FIELDS),))]
)
#: Bytes of one (device, metric) state as stored.
STATE_BYTES = _CELL.itemsize


def storable(states: F64) -> F64:
    """``states`` with the float32 fields rounded as storage keeps them (a copy)."""
    cells = states.reshape(-1, K).copy()
    cells[:, NARROW] = cells[:, NARROW].astype(np.float32)
    return cells.reshape(states.shape)


def fresh_states(n_devices: int, metrics: int = 1) -> F64:
    """States for devices never seen before."""
    states = np.zeros((n_devices, metrics, K), dtype=np.float64)
    states[:, :, LASTTS] = np.nan
    states[:, :, DROPMARK] = np.nan
    states[:, :, GAP] = np.nan  # no interval seen yet (scheduler.detector_step)
    states[:, :, RES] = np.inf
    states[:, :, TAIL] = GAUSS_TAIL_Z
    states[:, :, FARTAIL] = GAUSS_FAR_Z
    return states.reshape(n_devices, metrics * K)


def pack_state_rows(states: F64) -> U8:
    """Every device row's stored bytes (``STATE_BYTES`` per metric) as one uint8 array, one
    row per device: an adapter writes a batch's states from it without a loop per device."""
    cells = states.reshape(states.shape[0], states.shape[1] // K, K)
    packed = np.empty(cells.shape[:2], dtype=_CELL)
    packed["wide"] = cells[:, :, _WIDE]
    packed["narrow"] = cells[:, :, NARROW]
    return packed.view(np.uint8).reshape(states.shape[0], packed.shape[1] * STATE_BYTES)


def pack_states(states: F64) -> list[bytes]:
    """One bytes blob per device row (``STATE_BYTES`` per metric), for one MSET."""
    rows = pack_state_rows(states)
    width, flat = rows.shape[1], rows.tobytes()
    return [flat[at : at + width] for at in range(0, len(flat), width)]


def unpack_states(blobs: list[bytes | None], metrics: int = 1) -> F64:
    """Rows for ``blobs`` as MGET returns them; None or a blob of another layout is a fresh device.

    A layout change (another ``K`` or metric count) therefore re-warms devices rather than
    misreading old bytes.
    """
    width_bytes = metrics * STATE_BYTES
    n = len(blobs)
    present = cast(list[bytes], blobs) if None not in blobs else [b or b"" for b in blobs]
    sizes = np.fromiter(map(len, present), dtype=np.intp, count=n)
    good = sizes == width_bytes
    if good.all():
        return _cells_to_rows(b"".join(present), n, metrics)
    states = fresh_states(n, metrics)
    if good.any():
        joined = b"".join(itertools.compress(present, good))
        states[good] = _cells_to_rows(joined, int(good.sum()), metrics)
    return states


def _cells_to_rows(joined: bytes, n: int, metrics: int) -> F64:
    packed = np.frombuffer(joined, dtype=_CELL).reshape(n, metrics)
    cells = np.empty((n, metrics, K))
    cells[:, :, _WIDE] = packed["wide"]
    cells[:, :, NARROW] = packed["narrow"]
    return cells.reshape(n, metrics * K)


def episode_start_ts(states: F64, metric: int = 0) -> F64:
    """When each device's current episode began (NaN when it is not in one)."""
    cells = states.reshape(states.shape[0], -1, K)[:, metric]
    return np.where(cells[:, INEP] > 0, cells[:, EPSTART], np.nan)
