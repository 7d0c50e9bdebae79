"""Per-device, per-minute rollups (count, sum, min, max, last) of a columnar batch.

One sort groups the batch by (device, minute); ``np.*.reduceat`` folds each
group. The result is a delta that a store merges into what it already holds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

MINUTE_S = 60


@dataclass(frozen=True)
class RollupDelta:
    """One row per (device, minute); value columns are (rows, metrics)."""

    device_id: npt.NDArray[np.uint64]
    minute_ts: npt.NDArray[np.int64]
    count: npt.NDArray[np.int64]
    last_ts: npt.NDArray[np.float64]
    sum: npt.NDArray[np.float64]
    min: npt.NDArray[np.float64]
    max: npt.NDArray[np.float64]
    last: npt.NDArray[np.float64]

    def __len__(self) -> int:
        return int(self.device_id.shape[0])


@dataclass(frozen=True)
class Rollup:
    """A stored rollup for one device and minute."""

    count: int
    last_ts: float
    sum: tuple[float, ...]
    min: tuple[float, ...]
    max: tuple[float, ...]
    last: tuple[float, ...]


def compute_rollups(
    device_id: npt.NDArray[np.uint64], ts: npt.NDArray[np.float64], values: npt.NDArray[np.float64]
) -> RollupDelta:
    minute = (np.floor(ts / MINUTE_S) * MINUTE_S).astype(np.int64)
    # lexsort's last key is primary: group by device, then minute, then time so
    # the last row of each group is the latest reading.
    order = np.lexsort((ts, minute, device_id))
    dev, mnt, t, v = device_id[order], minute[order], ts[order], values[order]
    n = dev.shape[0]
    if n == 0:
        empty_v = np.empty((0, values.shape[1] if values.ndim == 2 else 0))
        return RollupDelta(dev, mnt, np.empty(0, np.int64), t, empty_v, empty_v, empty_v, empty_v)
    new_group = np.r_[True, (dev[1:] != dev[:-1]) | (mnt[1:] != mnt[:-1])]
    starts = np.flatnonzero(new_group)
    ends = np.r_[starts[1:], n]
    last_idx = ends - 1
    return RollupDelta(
        device_id=dev[starts],
        minute_ts=mnt[starts],
        count=(ends - starts).astype(np.int64),
        last_ts=t[last_idx],
        sum=np.add.reduceat(v, starts, axis=0),
        min=np.minimum.reduceat(v, starts, axis=0),
        max=np.maximum.reduceat(v, starts, axis=0),
        last=v[last_idx],
    )


def merge(a: Rollup | None, d: Rollup) -> Rollup:
    """Fold a delta into a stored rollup; the in-memory store uses the same rule as Lua."""
    if a is None:
        return d
    newer = d.last_ts >= a.last_ts
    return Rollup(
        count=a.count + d.count,
        last_ts=max(a.last_ts, d.last_ts),
        sum=tuple(x + y for x, y in zip(a.sum, d.sum, strict=True)),
        min=tuple(min(x, y) for x, y in zip(a.min, d.min, strict=True)),
        max=tuple(max(x, y) for x, y in zip(a.max, d.max, strict=True)),
        last=d.last if newer else a.last,
    )


def delta_row(delta: RollupDelta, i: int) -> Rollup:
    return Rollup(
        count=int(delta.count[i]),
        last_ts=float(delta.last_ts[i]),
        sum=tuple(float(x) for x in delta.sum[i]),
        min=tuple(float(x) for x in delta.min[i]),
        max=tuple(float(x) for x in delta.max[i]),
        last=tuple(float(x) for x in delta.last[i]),
    )


# Packed rows: how a store keeps a rollup as bytes. Columns: count, last_ts,
# then sum, min, max, last for each metric, all float64 (counts stay exact to 2**53).


def row_width(n_metrics: int) -> int:
    return 2 + 4 * n_metrics


def empty_row(n_metrics: int) -> npt.NDArray[np.float64]:
    """The identity of merge_rows: nothing counted, never seen."""
    m = n_metrics
    return np.concatenate(
        ([0.0, -np.inf], np.zeros(m), np.full(m, np.inf), np.full(m, -np.inf), np.full(m, np.nan))
    )


def delta_rows(delta: RollupDelta, sel: npt.NDArray[np.intp]) -> npt.NDArray[np.float64]:
    return np.column_stack(
        (
            delta.count[sel].astype(np.float64),
            delta.last_ts[sel],
            delta.sum[sel],
            delta.min[sel],
            delta.max[sel],
            delta.last[sel],
        )
    )


def merge_rows(
    stored: npt.NDArray[np.float64], new: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """Vectorised merge of packed rows; same rule as ``merge``."""
    m = (stored.shape[1] - 2) // 4
    out = np.empty_like(new)
    out[:, 0] = stored[:, 0] + new[:, 0]
    out[:, 1] = np.maximum(stored[:, 1], new[:, 1])
    s, mn, mx, last = (slice(2 + i * m, 2 + (i + 1) * m) for i in range(4))
    out[:, s] = stored[:, s] + new[:, s]
    out[:, mn] = np.minimum(stored[:, mn], new[:, mn])
    out[:, mx] = np.maximum(stored[:, mx], new[:, mx])
    newer = (new[:, 1] >= stored[:, 1])[:, None]
    out[:, last] = np.where(newer, new[:, last], stored[:, last])
    return out


def row_bytes(rows: npt.NDArray[np.float64]) -> npt.NDArray[np.uint8]:
    """Packed rows as stored, one uint8 row per rollup row (a store writes them in one go)."""
    packed = np.ascontiguousarray(rows, dtype="<f8")
    return packed.view(np.uint8).reshape(packed.shape[0], packed.shape[1] * 8)


def encode_rows(rows: npt.NDArray[np.float64]) -> list[bytes]:
    packed = np.ascontiguousarray(rows, dtype="<f8")
    out = packed.view(np.dtype((np.void, packed.shape[1] * 8))).ravel().tolist()
    return out  # type: ignore[return-value]


def decode_rows(blobs: list[bytes | None], n_metrics: int) -> npt.NDArray[np.float64]:
    """Stored blobs (None where absent) → rows; absent rows are the merge identity."""
    width = row_width(n_metrics)
    absent = blobs.count(None)
    if absent == len(blobs):  # a minute's first batch
        return np.tile(empty_row(n_metrics), (absent, 1))
    if absent:
        blank = empty_row(n_metrics).astype("<f8").tobytes()
        blobs = [b if b is not None else blank for b in blobs]
    joined = b"".join(blobs)  # type: ignore[arg-type]
    return np.frombuffer(joined, dtype="<f8").reshape(len(blobs), width).copy()


def row_to_rollup(row: npt.NDArray[np.float64], n_metrics: int) -> Rollup:
    m = n_metrics
    return Rollup(
        count=int(row[0]),
        last_ts=float(row[1]),
        sum=tuple(float(x) for x in row[2 : 2 + m]),
        min=tuple(float(x) for x in row[2 + m : 2 + 2 * m]),
        max=tuple(float(x) for x in row[2 + 2 * m : 2 + 3 * m]),
        last=tuple(float(x) for x in row[2 + 3 * m : 2 + 4 * m]),
    )
