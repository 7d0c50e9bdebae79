"""Given readings as devices send them, validation accepts good ones and names what is wrong."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler.errors import InvalidReading
from scheduler.validation import REASON_CODE, Limits, check_columns, parse_reading

NOW = 1_800_000_000.0
LIMITS = Limits(metrics=("temp", "hum"))
GOOD = {"device_id": 7, "ts": NOW - 1, "temp": 21.5, "hum": 40}


def test_a_good_reading_parses_from_dict_and_json_alike() -> None:
    assert parse_reading(GOOD, LIMITS, NOW) == (7, NOW - 1, (21.5, 40.0))
    assert parse_reading(json.dumps(GOOD).encode(), LIMITS, NOW) == (7, NOW - 1, (21.5, 40.0))


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{nope", "malformed"),
        (b"[1, 2]", "malformed"),
        (json.dumps({**GOOD, "pad": "x" * 5000}).encode(), "oversize"),
        ({k: v for k, v in GOOD.items() if k != "hum"}, "missing_field"),
        ({**GOOD, "fw": 1}, "extra_field"),
        ({**GOOD, "device_id": "7"}, "wrong_type"),
        ({**GOOD, "device_id": True}, "wrong_type"),
        ({**GOOD, "device_id": -1}, "wrong_type"),
        ({**GOOD, "temp": "warm"}, "wrong_type"),
        ({**GOOD, "ts": None}, "wrong_type"),
        ({**GOOD, "temp": float("nan")}, "not_finite"),
        ({**GOOD, "hum": float("inf")}, "not_finite"),
        ({**GOOD, "temp": 1e300}, "out_of_range"),
        ({**GOOD, "ts": NOW + 3600}, "ts_future"),
        ({**GOOD, "ts": NOW - 30 * 86400}, "ts_past"),
    ],
)
def test_each_bad_reading_is_rejected_with_its_reason(raw: object, reason: str) -> None:
    with pytest.raises(InvalidReading) as exc:
        parse_reading(raw, LIMITS, NOW)  # type: ignore[arg-type]
    assert exc.value.reason == reason


def test_columns_get_one_reason_per_row_and_good_rows_pass() -> None:
    ts = np.array([NOW, NOW + 9999, NOW, np.nan, NOW])
    values = np.array([[1.0, 2.0], [1.0, 2.0], [1.0, 2.0], [1.0, 2.0], [np.inf, 0.0]])
    known = np.array([True, True, False, True, True])
    reason = check_columns(ts, values, known, LIMITS, NOW)
    assert reason.tolist() == [
        0,
        REASON_CODE["ts_future"],
        REASON_CODE["unknown_device"],
        REASON_CODE["not_finite"],
        REASON_CODE["not_finite"],
    ]


def test_columns_with_the_wrong_number_of_metrics_are_all_rejected() -> None:
    reason = check_columns(np.array([NOW]), np.ones((1, 3)), np.array([True]), LIMITS, NOW)
    assert reason.tolist() == [REASON_CODE["wrong_type"]]


@given(st.floats(allow_nan=True, allow_infinity=True), st.floats(-1e6, 1e6))
def test_a_value_is_accepted_exactly_when_finite_and_in_range(value: float, dt: float) -> None:
    reading = {**GOOD, "temp": value, "ts": NOW + dt}
    ok = np.isfinite(value) and abs(value) <= LIMITS.max_abs_value
    ok = ok and -LIMITS.max_past_age_s <= dt <= LIMITS.max_future_skew_s
    try:
        parse_reading(reading, LIMITS, NOW)
        accepted = True
    except InvalidReading:
        accepted = False
    assert accepted == ok
