"""Validation of readings: single ones (dict or JSON, as a device sends them) and columns.

Every rejection carries a reason code; ingest sends the reading to the
dead-letter stream with it. Nothing here raises out of a batch of good readings.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from scheduler import defaults
from scheduler.errors import InvalidReading

# Reason codes, in the order the checks run; index 0 means "accepted".
REASONS: tuple[str, ...] = (
    "ok",
    "malformed",
    "oversize",
    "missing_field",
    "extra_field",
    "wrong_type",
    "not_finite",
    "out_of_range",
    "ts_future",
    "ts_past",
    "unknown_device",
)
REASON_CODE = {name: code for code, name in enumerate(REASONS)}


@dataclass(frozen=True)
class Limits:
    """What ingest accepts; defaults documented in scheduler.defaults."""

    metrics: tuple[str, ...] = ("value",)
    max_future_skew_s: float = defaults.MAX_FUTURE_SKEW_S
    max_past_age_s: float = defaults.MAX_PAST_AGE_S
    max_reading_bytes: int = defaults.MAX_READING_BYTES
    max_abs_value: float = defaults.MAX_ABS_VALUE

    def __post_init__(self) -> None:
        if not self.metrics:
            raise ValueError("a reading needs at least one metric")
        if {"device_id", "ts"} & set(self.metrics):
            raise ValueError("metric names must not be 'device_id' or 'ts'")


def _is_number(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def parse_reading(
    raw: Mapping[str, object] | bytes | str, limits: Limits, now_ts: float
) -> tuple[int, float, tuple[float, ...]]:
    """One reading → (device_id, ts, values); raises InvalidReading with a reason code."""
    if isinstance(raw, bytes | str):
        if len(raw) > limits.max_reading_bytes:
            raise InvalidReading("oversize", f"{len(raw)} bytes > {limits.max_reading_bytes}")
        try:
            obj = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidReading("malformed", str(exc)) from exc
    else:
        obj = raw
    if not isinstance(obj, Mapping):
        raise InvalidReading("malformed", "a reading must be a JSON object")
    expected = {"device_id", "ts", *limits.metrics}
    keys = set(obj)
    if missing := expected - keys:
        raise InvalidReading("missing_field", ", ".join(sorted(missing)))
    if extra := keys - expected:
        raise InvalidReading("extra_field", ", ".join(sorted(map(str, extra))))
    device_id, ts = obj["device_id"], obj["ts"]
    if not isinstance(device_id, int) or isinstance(device_id, bool) or device_id < 0:
        raise InvalidReading("wrong_type", "device_id must be a non-negative integer")
    if not _is_number(ts):
        raise InvalidReading("wrong_type", "ts must be a number (epoch seconds)")
    values: list[float] = []
    for name in limits.metrics:
        v = obj[name]
        if not _is_number(v):
            raise InvalidReading("wrong_type", f"{name} must be a number")
        values.append(float(v))  # type: ignore[arg-type,unused-ignore]
    ts_f = float(ts)  # type: ignore[arg-type,unused-ignore]
    if not math.isfinite(ts_f) or not all(math.isfinite(v) for v in values):
        raise InvalidReading("not_finite", "NaN or infinite value")
    if any(abs(v) > limits.max_abs_value for v in values):
        raise InvalidReading("out_of_range", f"|value| > {limits.max_abs_value:g}")
    if ts_f > now_ts + limits.max_future_skew_s:
        raise InvalidReading("ts_future", f"ts {ts_f} is ahead of ingest clock {now_ts}")
    if ts_f < now_ts - limits.max_past_age_s:
        raise InvalidReading("ts_past", f"ts {ts_f} older than {limits.max_past_age_s:g} s")
    return device_id, ts_f, tuple(values)


def check_columns(
    ts: npt.NDArray[np.float64],
    values: npt.NDArray[np.float64],
    known: npt.NDArray[np.bool_],
    limits: Limits,
    now_ts: float,
) -> npt.NDArray[np.uint8]:
    """Reason code per row (0 = accepted) for columnar input; first failing check wins."""
    n = ts.shape[0]
    reason = np.zeros(n, dtype=np.uint8)
    if values.ndim != 2 or values.shape != (n, len(limits.metrics)):
        reason[:] = REASON_CODE["wrong_type"]
        return reason
    finite = np.isfinite(ts) & np.isfinite(values).all(axis=1)
    in_range = (np.abs(np.nan_to_num(values)) <= limits.max_abs_value).all(axis=1)
    checks: Sequence[tuple[str, npt.NDArray[np.bool_] | np.bool_]] = (
        ("not_finite", ~finite),
        ("out_of_range", ~in_range),
        ("ts_future", ts > now_ts + limits.max_future_skew_s),
        ("ts_past", ts < now_ts - limits.max_past_age_s),
        ("unknown_device", ~known),
    )
    for name, bad in reversed(checks):
        reason[bad] = REASON_CODE[name]
    return reason
