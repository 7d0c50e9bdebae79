"""Device alerts as compact records: one bytes blob per screened batch, for the recent-alerts log.

A record row is (device id, event time of the alerting reading, kind code, emitted time);
the bench matches these against the anomalies it injected, so recall, false alerts and
detection delay come from what the workers really emitted.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

RECORD_DTYPE = np.dtype(
    [("device_id", "<u8"), ("ts", "<f8"), ("kind", "i1"), ("emitted_ts", "<f8")]
)


def encode(
    device_id: npt.NDArray[np.uint64],
    ts: npt.NDArray[np.float64],
    kind: npt.NDArray[np.int8],
    emitted_ts: float,
) -> bytes:
    """One blob for the alerts of one batch."""
    rows = np.empty(device_id.size, dtype=RECORD_DTYPE)
    rows["device_id"] = device_id
    rows["ts"] = ts
    rows["kind"] = kind
    rows["emitted_ts"] = emitted_ts
    return rows.tobytes()


def decode(blobs: list[bytes]) -> npt.NDArray[np.void]:
    """All rows of ``blobs``; a blob that is not a whole number of rows is skipped."""
    good = [b for b in blobs if len(b) % RECORD_DTYPE.itemsize == 0]
    return np.frombuffer(b"".join(good), dtype=RECORD_DTYPE)
