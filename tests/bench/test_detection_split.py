from __future__ import annotations

import numpy as np

from bench.throughput import screening_split


def test_alerts_are_split_by_whether_their_reading_was_screened_while_held() -> None:
    delay_ms = np.array([100.0, 200.0, 300.0, 9000.0, 12000.0])
    held = np.array([True, True, True, False, False])

    split = screening_split(delay_ms, held)

    assert split["while_held"] == {"alerts": 3, "p50": 200.0, "p99": 300.0}
    assert split["at_admission"] == {"alerts": 2, "p50": 12000.0, "p99": 12000.0}


def test_a_side_without_alerts_has_no_percentiles() -> None:
    split = screening_split(np.array([50.0]), np.array([False]))

    assert split["while_held"] == {"alerts": 0, "p50": None, "p99": None}
    assert split["at_admission"]["alerts"] == 1
