"""Given a real Alertmanager started on a free loopback port, incidents posted by the sink
show as active alerts with their labels and annotations, and resolve with ``endsAt``.
Skipped locally when prometheus-alertmanager is missing; required under CI."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from alerts.alertmanager_sink import AlertmanagerSink

CONFIG = """route:
  receiver: "null"
  group_wait: 1h
receivers:
  - name: "null"
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def alertmanager() -> Iterator[str]:
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("prometheus-alertmanager is required under CI (.ci/run installs it)")
        pytest.skip(
            "prometheus-alertmanager is not installed (apt-get install prometheus-alertmanager)"
        )
    workdir = tempfile.mkdtemp(prefix="iotsched-am-")
    conf = os.path.join(workdir, "alertmanager.yml")
    with open(conf, "w") as f:
        f.write(CONFIG)
    port = _free_port()
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={conf}",
            f"--storage.path={workdir}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            pytest.fail("alertmanager did not become ready")
        time.sleep(0.1)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


def active_alerts(url: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{url}/api/v2/alerts?active=true&silenced=false", timeout=5) as r:
        alerts: list[dict[str, Any]] = json.load(r)
    return [a for a in alerts if a["labels"].get("alertname") == "IotschedIncident"]


def document(status: str, at_ts: float) -> dict[str, Any]:
    return {
        "incident_id": "inc-1", "status": status, "severity": "page", "group": "g7",
        "region": "eu-west", "device_count": 120, "sample_device_ids": [11, 12, 13],
        "first_seen_ts": at_ts - 30, "last_seen_ts": at_ts - 1, "cascade_id": None,
        "alert_count": 140, "kinds": {"spike": 100, "dropout": 40}, "at_ts": at_ts,
        "detection_latency_ms": 900.0,
    }  # fmt: skip


def test_an_incident_fires_with_labels_and_resolves_with_ends_at(alertmanager: str) -> None:
    now = time.time()
    clock = [now]
    sink = AlertmanagerSink(alertmanager, repost_s=60, clock=lambda: clock[0])

    sink.emit([document("firing", now)])
    deadline = time.monotonic() + 10
    while not (firing := active_alerts(alertmanager)):
        assert time.monotonic() < deadline, "the alert never became active"
        time.sleep(0.1)

    alert = firing[0]
    assert alert["labels"] == {
        "alertname": "IotschedIncident", "incident_id": "inc-1", "region": "eu-west",
        "group": "g7", "severity": "page", "kind": "spike",
    }  # fmt: skip
    assert alert["annotations"]["device_count"] == "120"
    assert alert["annotations"]["sample"] == "11,12,13"
    assert alert["annotations"]["first_seen"].startswith(
        time.strftime("%Y-%m-%d", time.gmtime(now - 30))
    )
    assert alert["status"]["state"] == "active"

    sink.emit([document("resolved", time.time())])
    deadline = time.monotonic() + 10
    while active_alerts(alertmanager):
        assert time.monotonic() < deadline, "the alert was not resolved"
        time.sleep(0.1)


def test_firing_incidents_are_reposted_while_they_fire() -> None:
    posted: list[list[str]] = []
    clock = [1_000.0]
    sink = AlertmanagerSink("http://unused", repost_s=60, clock=lambda: clock[0])
    sink.post = lambda docs, now: posted.append([d["incident_id"] for d in docs])  # type: ignore[method-assign]
    other = {**document("firing", 1_000.0), "incident_id": "inc-2"}

    sink.emit([document("firing", 1_000.0)])
    clock[0] += 30
    sink.emit([other])  # inc-1 posted 30 s ago: not due
    clock[0] += 31
    sink.emit([{**other, "status": "updated"}])  # inc-1 now 61 s old: re-posted
    sink.emit([document("resolved", clock[0])])
    clock[0] += 120
    sink.emit([{**other, "status": "resolved"}])  # inc-1 resolved: never re-posted again

    assert posted == [["inc-1"], ["inc-2"], ["inc-2", "inc-1"], ["inc-1"], ["inc-2"]]
