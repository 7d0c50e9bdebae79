"""`iotsched detect FILE.csv`: replay a recorded single-device series through the detector.

Writes ``timestamp,value,score,anomaly,kind,expected,band`` to stdout, one row per
usable reading in time order, with ``anomaly`` 1 on the first reading of each alert
episode; ``kind`` names what the reading looks like (``normal`` when nothing), ``expected``
is the predicted value and ``band`` the half-width around it past which one reading is a
spike or dip, so an alert says what was expected and what was observed. The detector and
its defaults are the ones the screening stage runs, so a recording shows what the
fleet would have alerted on in its values.

A gap in a recording is shown (``kind`` dropout, with its score) but is not an alert
unless ``--alert-gaps``: a recording's timestamps only say when readings were kept, and a
hole in them is as often the recorder's (export, retention, collection outage) as the
device's. The fleet judges silence live, on its own clock, with the dropout sweep.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from datetime import UTC, datetime
from typing import Any

import numpy as np

from scheduler.anomaly_kind import DROPOUT, KIND_NAMES
from scheduler.detection import screen
from scheduler.detector_config import DetectorConfig
from scheduler.detector_state import fresh_states

EXIT_USAGE = 2


def register(subparsers: Any) -> None:
    """Add the ``detect`` sub-command to an argparse subparsers object."""
    parser = subparsers.add_parser(
        "detect",
        help="replay a recorded single-device CSV series through the anomaly detector",
        description=__doc__,
    )
    parser.add_argument("file", metavar="FILE.csv", help="recording with a header row")
    parser.add_argument("--time-col", default="timestamp", help="epoch seconds or ISO-8601")
    parser.add_argument("--value-col", default="value", help="numeric reading")
    parser.add_argument(
        "--alert-gaps",
        action="store_true",
        help="count a gap in the recording (a dropout) as an anomaly, as the live fleet does",
    )
    parser.set_defaults(func=run)


class _InputError(Exception):
    """Raised when the recording cannot be read as asked; the message is for the user."""


def run(args: argparse.Namespace) -> int:
    try:
        rows, skipped = _read(args.file, args.time_col, args.value_col)
    except _InputError as exc:
        print(f"iotsched detect: {exc}", file=sys.stderr)
        return EXIT_USAGE

    # Recordings are often appended out of order; the detector needs time order.
    rows.sort(key=lambda row: row[0])
    ts = np.array([row[0] for row in rows], dtype=np.float64)
    value = np.array([row[1] for row in rows], dtype=np.float64)
    result = screen(fresh_states(1), np.zeros(ts.size, dtype=np.intp), ts, value, DetectorConfig())
    alerts = result.alert if args.alert_gaps else result.alert & (result.kind != DROPOUT)

    out = csv.writer(sys.stdout, lineterminator="\n")
    out.writerow(["timestamp", "value", "score", "anomaly", "kind", "expected", "band"])
    for (_, _, ts_text, value_text), score, alert, kind, expected, band in zip(
        rows, result.score, alerts, result.kind, result.expected, result.band, strict=True
    ):
        out.writerow(
            [
                ts_text,
                value_text,
                f"{score:.3f}",
                int(alert),
                KIND_NAMES[kind],
                f"{expected:.6g}",
                f"{band:.6g}",
            ]
        )
    if skipped:
        print(
            f"iotsched detect: skipped {skipped} row(s) with no usable value or time",
            file=sys.stderr,
        )
    return 0


def _read(
    path: str, time_col: str, value_col: str
) -> tuple[list[tuple[float, float, str, str]], int]:
    try:
        handle = open(path, newline="", encoding="utf-8-sig")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        raise _InputError(f"no such file: {path}") from None
    except OSError as exc:
        raise _InputError(f"cannot read {path}: {exc.strerror}") from None
    with handle:
        reader = csv.DictReader(handle)
        columns = [name.strip() for name in reader.fieldnames or []]
        reader.fieldnames = columns
        for wanted in (time_col, value_col):
            if wanted not in columns:
                raise _InputError(
                    f"column {wanted!r} not in {path} (columns: {', '.join(columns) or 'none'})"
                )
        rows: list[tuple[float, float, str, str]] = []
        skipped = 0
        for record in reader:
            ts_text = (record.get(time_col) or "").strip()
            value_text = (record.get(value_col) or "").strip()
            ts = _parse_ts(ts_text)
            value = _parse_value(value_text)
            if ts is None or value is None:
                skipped += 1
                continue
            rows.append((ts, value, ts_text, value_text))
    return rows, skipped


def _parse_value(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _parse_ts(text: str) -> float | None:
    """Epoch seconds, or ISO-8601 (a time without an offset is taken as UTC)."""
    if not text:
        return None
    try:
        epoch = float(text)
    except ValueError:
        pass
    else:
        return epoch if math.isfinite(epoch) else None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
