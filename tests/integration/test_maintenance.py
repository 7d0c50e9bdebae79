"""Maintenance windows with real maintenance, data and beat workers (bench/maintenance.py).

Given a window booked during steady load, it starts on time on the dedicated
maintenance worker while data processing goes on; given an operation that
fails every try, it is retried inside its window, then rebooked into the next
window with an alert.
"""

from __future__ import annotations

import pytest

from bench.maintenance import failing_is_rebooked, on_time_under_load

pytestmark = pytest.mark.integration


def test_a_window_starts_on_time_under_load_and_processing_continues(redis_server: str) -> None:
    # Given steady load at half of the data worker's capacity, measured first on the rig
    out = on_time_under_load(
        redis_server, lead_s=3.0, window_s=3.0, load_fraction=0.5, probe_readings=150_000
    )
    print(out)
    assert out["capacity_rps_measured"] > 0
    assert out["load_fraction_of_capacity"] == 0.5
    # Then the operation started inside its window (how late is the bench's figure) and finished
    assert out["started_inside_window"]
    assert (
        out["start_delay_s"] is not None and 0 <= out["start_delay_s"] < out["window"]["duration_s"]
    )
    assert out["operation_succeeded"]
    # And its slot was held back from data pools as the window began
    assert out["drain_slots_at_start"] == 1
    # And data kept being processed during the window, premium latencies recorded
    assert out["processed_during_window"] > 0
    assert out["premium_readings_during_window"] > 0
    assert out["premium_p99_ms_during_window"] is not None
    # And nothing was lost
    assert out["readings_processed"] == out["readings_ingested"]


def test_a_failing_operation_is_rebooked_into_the_next_window_with_an_alert(
    redis_server: str,
) -> None:
    # Given an operation that fails every try (2 tries, 0.5 s backoff), When its window runs
    # (6 s: on a loaded CI machine a 3 s window sometimes closed before the second try)
    out = failing_is_rebooked(redis_server, lead_s=2.0, window_s=6.0)
    print(out)
    # Then it was tried twice inside the window, then rebooked
    assert out["events"] == ["started", "failed", "started", "failed", "rebooked"]
    # And the alert names the failed window, the reason and the new one
    alert = out["alert"]
    assert alert["kind"] == "maintenance_rebooked"
    assert alert["reservation_id"] == out["failed_window"]["id"]
    assert "no device registry stored" in alert["reason"]
    rebooked = out["rebooked"]
    assert rebooked is not None and alert["rebooked_as"] == rebooked["id"]
    # And the new window is the next feasible one, after the failed window, which was released
    assert rebooked["starts_after_failed_window"] and rebooked["attempt"] == 1
    assert rebooked["operation"] == "rebuild_registry"
    assert out["failed_window_released"]
