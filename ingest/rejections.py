"""How a rejected reading is dead-lettered: the bytes it came as, and what was wrong."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from scheduler.model import DeadLetter
from scheduler.validation import REASONS, Limits


def raw_bytes(raw: object) -> bytes:
    if isinstance(raw, bytes):
        return raw
    if isinstance(raw, str):
        return raw.encode()
    try:
        return json.dumps(raw).encode()
    except (TypeError, ValueError):
        return repr(raw).encode()


def column_detail(code: str, row: Mapping[str, float], limits: Limits, now: float) -> str:
    """What was wrong with one rejected row, in the words ``parse_reading`` uses."""
    ts = row["ts"]
    return {
        "unknown_device": f"device {row['device_id']} is not in the registry",
        "ts_future": f"ts {ts} is ahead of ingest clock {now}",
        "ts_past": f"ts {ts} older than {limits.max_past_age_s:g} s",
        "out_of_range": f"|value| > {limits.max_abs_value:g}",
        "not_finite": "NaN or infinite value",
        "wrong_type": f"values must have one column per metric ({len(limits.metrics)})",
    }.get(code, code)


def column_letters(
    dev: npt.NDArray[np.uint64],
    t: npt.NDArray[np.float64],
    v: npt.NDArray[np.float64],
    reason: npt.NDArray[np.integer],
    payloads: Sequence[bytes] | None,
    limits: Limits,
    now: float,
) -> list[DeadLetter]:
    """A dead letter for each row ``check_columns`` gave a reason (non-zero): with the
    bytes the row arrived as when ``payloads`` has them, else the row as JSON."""
    letters = []
    for i in np.flatnonzero(reason).tolist():
        row: dict[str, float] = {"device_id": int(dev[i]), "ts": float(t[i])}
        if v.ndim == 2 and v.shape[0] == len(dev):
            row.update(zip(limits.metrics, map(float, v[i]), strict=False))
        code = REASONS[reason[i]]
        raw = payloads[i] if payloads is not None else json.dumps(row).encode()
        letters.append(DeadLetter(code, column_detail(code, row, limits, now), raw, "ingest", now))
    return letters
