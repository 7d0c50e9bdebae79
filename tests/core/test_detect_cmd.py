"""`iotsched detect`: offline replay of a recorded series through the screening detector."""

from __future__ import annotations

import argparse
import csv
import io
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from iotsched import detect_cmd


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="iotsched")
    detect_cmd.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["detect", *argv])


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def output_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def recording(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Irregular sampling (5-15 s), noise of 0.3 on a slow daily cycle, 2-decimal values."""
    rng = np.random.default_rng(seed)
    ts = 1_700_000_000.0 + np.cumsum(rng.uniform(5.0, 15.0, n))
    value = 20.0 + 3.0 * np.sin(2 * np.pi * ts / 86_400) + rng.normal(0.0, 0.3, n)
    return ts, np.round(value, 2)


def test_the_command_defaults_to_the_timestamp_and_value_columns() -> None:
    args = parse("x.csv")
    assert (args.file, args.time_col, args.value_col, args.func) == (
        "x.csv",
        "timestamp",
        "value",
        detect_cmd.run,
    )


def eventful_recording(tmp_path: Path) -> Path:
    """A spike (500), a level change (900), a plateau (1300) and a 2-hour gap (1600)."""
    ts, value = recording(2_000)
    value[500] += 5.0
    value[900:] += 2.0
    value[1_300:1_340] = value[1_300]
    ts[1_600:] += 7_200.0
    rows = [[f"{t:.0f}", f"{v:.2f}"] for t, v in zip(ts, value, strict=True)]
    return write_csv(tmp_path / "rec.csv", ["timestamp", "value"], rows)


def test_a_recording_flags_each_event_once_and_nothing_else(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a recording with a spike, a level change, a plateau and a 2-hour gap
    path = eventful_recording(tmp_path)
    # When it is replayed with gaps alerted, as the live fleet alerts silence
    assert detect_cmd.run(parse(str(path), "--alert-gaps")) == 0
    out = output_rows(capsys.readouterr().out)
    # Then every row comes back with a score, and one anomaly marks each event
    assert len(out) == 2_000
    assert list(out[0]) == [
        "timestamp",
        "value",
        "score",
        "anomaly",
        "kind",
        "expected",
        "band",
    ]
    flagged = [i for i, row in enumerate(out) if row["anomaly"] == "1"]
    events = [500, 900, 1_300, 1_600]
    assert len(flagged) == len(events)
    for event, at in zip(events, flagged, strict=True):
        assert event <= at <= event + 12
    assert all(float(row["score"]) >= 1.0 for row in (out[i] for i in flagged))
    # And each alert says what it saw: its kind, and the spike lies outside its band
    assert [out[i]["kind"] for i in flagged] == ["spike", "level_shift", "stuck", "dropout"]
    spike = out[flagged[0]]
    assert abs(float(spike["value"]) - float(spike["expected"])) > float(spike["band"])


def test_a_gap_in_a_recording_is_shown_but_not_alerted_by_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the same recording, with its 2-hour gap before reading 1600
    path = eventful_recording(tmp_path)
    # When it is replayed with the defaults
    assert detect_cmd.run(parse(str(path))) == 0
    out = output_rows(capsys.readouterr().out)
    # Then the value events are still alerted, and the gap is named with its score, unalerted
    flagged = [i for i, row in enumerate(out) if row["anomaly"] == "1"]
    assert [out[i]["kind"] for i in flagged] == ["spike", "level_shift", "stuck"]
    assert out[1_600]["kind"] == "dropout"
    assert float(out[1_600]["score"]) >= 1.0
    assert out[1_600]["anomaly"] == "0"


def test_iso_times_unsorted_rows_and_blank_values_are_handled(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given ISO-8601 times in shuffled order, with blank and NaN values, and a spike
    ts, value = recording(300, seed=1)
    value[200] += 6.0
    iso = [datetime.fromtimestamp(t, UTC).isoformat() for t in ts]
    rows = [[s, f"{v:.2f}"] for s, v in zip(iso, value, strict=True)]
    rows[50][1] = ""
    rows[60][1] = "NaN"
    order = np.random.default_rng(2).permutation(300)
    path = write_csv(tmp_path / "rec.csv", ["when", "temp"], [rows[i] for i in order])
    # When replayed with the column names given
    assert detect_cmd.run(parse(str(path), "--time-col", "when", "--value-col", "temp")) == 0
    captured = capsys.readouterr()
    out = output_rows(captured.out)
    # Then the unusable rows are skipped (and said so), the rest come back in time order
    assert len(out) == 298
    assert [row["timestamp"] for row in out] == [s for i, s in enumerate(iso) if i not in (50, 60)]
    assert "skipped 2" in captured.err
    # And the spike is the one anomaly
    assert [row["timestamp"] for row in out if row["anomaly"] == "1"] == [iso[200]]


def test_a_missing_file_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert detect_cmd.run(parse(str(tmp_path / "absent.csv"))) == 2
    captured = capsys.readouterr()
    assert "no such file" in captured.err
    assert captured.out == ""


def test_a_missing_column_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_csv(tmp_path / "rec.csv", ["time", "value"], [["1", "2"]])
    assert detect_cmd.run(parse(str(path))) == 2
    err = capsys.readouterr().err
    assert "'timestamp'" in err
    assert "time, value" in err
