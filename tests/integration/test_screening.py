"""Screening, correlation and alerting with real ``celery worker`` processes on real Redis.

Given a warmed-up fleet, when one device spikes, then a firing incident naming it
appears in the alert stream within the detection bound; when whole groups shift at
once, then they fold into a handful of incidents, not one alert per device.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import redis

from alerts.stream_sink import read_alerts
from bench.loadrun import offer_columns
from bench.redis_run import RedisRun
from scheduler.batching import BatchingConfig
from scheduler.correlation import CorrelatorConfig
from scheduler.defaults import DETECTION_BOUND_S
from scheduler.latency import percentile_ms
from stores.detector_store import RedisDetectorStore

pytestmark = pytest.mark.integration

DEVICES = 3_000  # three groups of 1,000 (generate_registry's group size)
WARMUP_READINGS = 25
#: Warm-up cadence: slow enough that the seconds the test itself takes are no dropout.
INTERVAL_S = 10.0


class Fleet:
    def __init__(self, run: RedisRun) -> None:
        self.run = run
        assert run.registry is not None
        self.ids = run.registry.device_id
        self.group = run.registry.group
        self.client = redis.Redis.from_url(run.redis_url)
        self.detector = RedisDetectorStore(self.client, run.keys)
        self.rng = np.random.default_rng(5)
        self.level = self.rng.uniform(10.0, 30.0, self.ids.size)
        self.sent = 0

    def send(self, ts: float, bump: np.ndarray | None = None) -> None:
        """One reading per device at event time ``ts``, ``bump`` added to the values."""
        values = self.level + self.rng.normal(0.0, 0.5, self.ids.size)
        if bump is not None:
            values = values + bump
        producer = self.run.producer
        # Admission control may hand some back: offer them again until all are taken.
        offer_columns(producer, self.ids, np.full(self.ids.size, ts), values)
        producer.flush()
        self.sent += self.ids.size

    def wait_screened(self, timeout_s: float = 20.0) -> None:
        deadline = time.time() + timeout_s
        while self.detector.screen_counters()["screened_readings"] < self.sent:
            assert time.time() < deadline, f"screened {self.detector.screen_counters()}"
            time.sleep(0.05)

    def wait_alerts(self, done: Any, timeout_s: float) -> list[dict[str, Any]]:
        deadline = time.time() + timeout_s
        while True:
            docs = read_alerts(self.client, self.run.keys)
            if done(docs) or time.time() > deadline:
                return docs
            time.sleep(0.05)


@pytest.fixture(scope="module")
def fleet(redis_server: str) -> Iterator[Fleet]:
    batching = BatchingConfig(max_readings=1_000)
    prefix = f"t-{uuid.uuid4().hex[:10]}"
    with RedisRun(
        redis_server, prefix, devices=DEVICES, seed=3, pool="solo", batching=batching
    ) as run:
        fleet = Fleet(run)
        start = time.time() - (WARMUP_READINGS + 1) * INTERVAL_S
        for r in range(WARMUP_READINGS):
            fleet.send(start + r * INTERVAL_S)
        fleet.wait_screened()
        yield fleet


def test_an_injected_spike_is_alerted_within_the_bound(fleet: Fleet) -> None:
    # Given a warmed-up fleet with no alert on group 2 yet (the cascade test, in
    # whichever order it runs, shifts groups 0 and 1 only)
    assert [d for d in read_alerts(fleet.client, fleet.run.keys) if d["group"] == "2"] == []
    # When one device of group 2 spikes now
    device = int(fleet.ids[fleet.group == 2][17])
    bump = np.where(fleet.ids == device, 40.0, 0.0)
    # Alerts the warm-up raised (its readings are back-dated by up to a minute, so any
    # false positive among them would read as a minute's latency) are not the spike's.
    warm_up = fleet.detector.detection_histogram()
    spike_ts = time.time()
    fleet.send(spike_ts, bump)
    docs = fleet.wait_alerts(
        lambda ds: any(device in d["sample_device_ids"] for d in ds), DETECTION_BOUND_S
    )
    seen_s = time.time() - spike_ts
    # Then a firing incident naming the device is in the stream within the bound
    mine = [d for d in docs if device in d["sample_device_ids"]]
    assert [d["status"] for d in mine] == ["firing"], docs
    assert mine[0]["group"] == "2" and mine[0]["device_count"] == 1
    # The reading's own event time, to the millisecond (a relative tolerance on 1.7e9 is ±1,700 s)
    assert mine[0]["first_seen_ts"] == pytest.approx(spike_ts, rel=0, abs=1e-3)
    assert 0 < mine[0]["detection_latency_ms"] < DETECTION_BOUND_S * 1000
    assert seen_s < DETECTION_BOUND_S
    # And the device alert's own detection latency was recorded
    since = {
        bucket: count - warm_up.get(bucket, 0)
        for bucket, count in fleet.detector.detection_histogram().items()
        if count > warm_up.get(bucket, 0)
    }
    alert_p99 = percentile_ms(since, 99)
    print(f"spike seen in the stream after {seen_s * 1000:.0f} ms; alert p99 {alert_p99:.0f} ms")
    assert alert_p99 is not None and alert_p99 < DETECTION_BOUND_S * 1000


def test_a_cascade_over_two_groups_yields_few_incidents(fleet: Fleet) -> None:
    # Given the warmed-up fleet; When groups 0 and 1 (2,000 devices) shift at once
    hit = fleet.group <= 1
    before = len(read_alerts(fleet.client, fleet.run.keys))
    now = time.time()
    for r in range(3):
        fleet.send(now + r * 0.2, np.where(hit, 30.0, 0.0))

    def all_in(ds: list[dict[str, Any]]) -> bool:
        return sum(d["device_count"] for d in _latest(ds, {"0", "1"}).values()) >= 0.95 * hit.sum()

    docs = fleet.wait_alerts(all_in, DETECTION_BOUND_S * 2)
    grown = any(d["first_seen_ts"] < now for d in _latest(docs, {"0", "1"}).values())
    if grown and not all_in(docs):
        # A warm-up false positive in group 0 or 1 (a 4-sigma reading among 75,000
        # happens) left an incident open that the shift grew: its growth is notified at
        # once only while its severity rises, then at most every group_interval_s, as for
        # any incident (CI once saw it at 72 of its devices after the first 10 s).
        docs = fleet.wait_alerts(all_in, CorrelatorConfig().group_interval_s + DETECTION_BOUND_S)
    # Then nearly every device is in an incident, and the incidents are few:
    # at most one per (group, processing region), all linked as one cascade per region
    latest = _latest(docs, {"0", "1"})
    devices = sum(d["device_count"] for d in latest.values())
    regions = {d["region"] for d in latest.values()}
    print(f"cascade: {devices} devices in {len(latest)} incidents, {len(docs) - before} alerts")
    # On failure, say which incidents held how many devices since when: an incident the
    # warm-up opened (a false positive) and the shift then grew would show an early first_seen_ts
    # and a device_count its group_interval_s has not updated yet.
    seen = [
        (
            d["region"],
            d["group"],
            d["status"],
            d["device_count"],
            d["kinds"],
            round(d["first_seen_ts"] - now, 1),
            round(d["at_ts"] - now, 1),
        )
        for d in latest.values()
    ]
    assert devices >= 0.95 * hit.sum(), seen
    assert len(latest) <= 2 * len(regions)
    assert len(docs) - before <= 4 * len(latest)
    assert all(d["severity"] in ("critical", "page") for d in latest.values())


def _latest(docs: list[dict[str, Any]], groups: set[str]) -> dict[str, dict[str, Any]]:
    """The newest notification of each incident of ``groups``."""
    out: dict[str, dict[str, Any]] = {}
    for d in docs:
        if d["group"] in groups:
            out[d["incident_id"]] = d
    return out
