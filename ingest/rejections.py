"""How a rejected reading is dead-lettered: the bytes it came as, and what was wrong."""

from __future__ import annotations

import json
from collections.abc import Mapping

from scheduler.validation import Limits


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
