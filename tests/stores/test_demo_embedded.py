"""The README's main command, embedded: no services, every reading accounted for."""

from __future__ import annotations

import json

import pytest

from iotsched.cli import main


def test_the_embedded_demo_processes_every_reading_and_dead_letters_the_bad(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # When the demo runs for a second with no Redis and no worker processes
    code = main(["demo", "--seconds", "1", "--rate-rps", "5000", "--devices", "2000", "--json"])
    summary = json.loads(capsys.readouterr().out)
    # Then it succeeds, loses nothing, applies nothing twice, and rejects the bad readings
    assert code == 0
    assert summary["mode"] == "embedded"
    assert summary["lost"] == 0 and summary["duplicated"] == 0
    assert summary["processed"] + summary["dead_lettered"] == summary["readings"] == 5_000
    assert summary["dead_lettered"] >= 9
    assert summary["latency_ms"]["premium"]["p99"] is not None
