"""Maintenance windows on real workers: start delay under load, premium p99, rebooking.

Shared by ``iotsched maintenance bench`` (prints the figures) and the
integration tests (assert on them). One region, one data worker, one
maintenance worker (``-Q eu-west.maintenance``) and the control worker that
runs beat, all real ``celery worker`` processes on a real Redis.
"""

from __future__ import annotations

import subprocess
import threading
import time
import uuid
from typing import Any

import redis

from bench.loadrun import drive
from bench.redis_server import private_redis
from bench.sending import bench_publisher
from bench.worker_launch import answering_nodes, start_control_worker, wait_for
from ingest.producer import Producer
from ingest.synthetic import SyntheticStream
from scheduler.geography import DEFAULT_SITES
from scheduler.latency import percentile_ms
from scheduler.registry import generate_registry
from scheduler.settings import Settings
from stores.health_store import HealthStore, text
from stores.keys import Keys
from stores.protocols import processed_readings
from stores.redis_state import RedisStateStore
from stores.reservation_store import ReservationStore
from tasks.app import broker_app
from workers.cluster import LocalCluster

REGION = DEFAULT_SITES[0].name
BASE_ENV = {
    "IOTSCHED_REGIONS": REGION,
    "IOTSCHED_SCREENING": "0",
    "IOTSCHED_REGION_BUDGET_SLOTS": "4",
    "IOTSCHED_PREMIUM_GUARANTEE_SLOTS": "1",
}


class MaintenanceRig:
    """Data, maintenance and control workers for one region under one key prefix."""

    def __init__(self, redis_url: str, key_prefix: str | None = None, **env: str) -> None:
        self.url = redis_url
        self.keys = Keys(key_prefix or f"iotsched-maint-{uuid.uuid4().hex[:8]}")
        self.env = {**BASE_ENV, **env}
        self.client = redis.Redis.from_url(redis_url)
        self.state = RedisStateStore(self.client, self.keys)
        settings = Settings.from_env({**self.env, "IOTSCHED_KEY_PREFIX": self.keys.prefix})
        self.book = ReservationStore.from_settings(self.client, settings)
        self.app = broker_app(redis_url, self.keys)
        self.clusters: list[LocalCluster] = []
        self.control: subprocess.Popen[bytes] | None = None

    def start(self, data: bool) -> None:
        roles = ["maintenance", *(["data"] if data else [])]
        for role in roles:
            cluster = LocalCluster(self.url, self.keys.prefix, (REGION,), env_extra=self.env)
            cluster.start(role)
            self.clusters.append(cluster)
        self.control = start_control_worker(self.url, self.keys.prefix, **self.env)
        names = {f"{role}-{REGION}" for role in roles} | {"control"}
        wait_for(lambda: names <= answering_nodes(self.app), 30, f"workers {sorted(names)}")
        if data:
            health = HealthStore(self.client, self.keys, (REGION,))
            wait_for(lambda: REGION in health.heartbeats(), 10, "data worker heartbeat")

    def stop(self) -> None:
        if self.control is not None:
            self.control.terminate()
            self.control.wait(15)
        for cluster in self.clusters:
            cluster.stop()
        self.app.close()
        self.state.delete_all()

    def event(self, kind: str, reservation_id: str) -> dict[str, str] | None:
        for e in self.book.events():
            if e["event"] == kind and e["reservation_id"] == reservation_id:
                return e
        return None


def _premium_hist(state: RedisStateStore) -> dict[int, int]:
    return state.latency_histogram("ingest", "premium")


#: Readings offered as fast as possible to measure the rig's capacity.
CAPACITY_PROBE_READINGS = 300_000
#: The share of measured capacity the bench offers while the window runs (issue 15: >= 70 %).
LOAD_FRACTION = 0.75


def measured_capacity_rps(
    rig: MaintenanceRig, producer: Producer, stream: SyntheticStream, readings: int
) -> tuple[float, int]:
    """The rig's end-to-end capacity: (readings/s, readings still queued when offering ended).

    ``readings`` are offered as fast as the producer can and the rate is taken
    from the first offer to the last reading processed: producer, Redis and
    worker share this machine, as they do under the bench's load. A backlog
    left when offering ended shows the worker, not the producer, set the rate.
    """
    done_before = processed_readings(rig.state.counters())
    started = time.time()
    drive(producer, stream, readings, None, 10_000)
    ingested = rig.state.counters()["ingested"]
    backlog = ingested - processed_readings(rig.state.counters())
    wait_for(lambda: processed_readings(rig.state.counters()) >= ingested, 120, "probe drained")
    return (ingested - done_before) / (time.time() - started), backlog


def on_time_under_load(
    redis_url: str,
    rate_rps: float | None = None,
    lead_s: float = 4.0,
    window_s: float = 4.0,
    load_fraction: float = LOAD_FRACTION,
    probe_readings: int = CAPACITY_PROBE_READINGS,
) -> dict[str, Any]:
    """A window booked during steady load: its start delay, and premium p99 inside it.

    The load is ``rate_rps`` if given, else ``load_fraction`` of the data
    worker's capacity, measured first on the same rig.
    """
    rig = MaintenanceRig(redis_url)
    try:
        registry = generate_registry(20_000, seed=3, sites=DEFAULT_SITES[:1])
        rig.state.save_registry(registry)
        rig.start(data=True)
        producer = Producer(lambda: registry, bench_publisher(rig.app, screening=False), rig.state)
        stream = SyntheticStream(registry, seed=3)
        capacity_rps, probe_backlog = None, None
        if rate_rps is None:
            capacity_rps, probe_backlog = measured_capacity_rps(
                rig, producer, stream, probe_readings
            )
            rate_rps = load_fraction * capacity_rps
        hist_at_load = _premium_hist(rig.state)
        load_s = lead_s + window_s + 1.0
        loader = threading.Thread(
            target=drive, args=(producer, stream, int(rate_rps * load_s), rate_rps, 1_000)
        )
        loader.start()
        now = time.time()
        r = rig.book.book(REGION, now + lead_s, window_s, 1, "expire_rollups", now)
        wait_for(lambda: time.time() >= r.start_ts, lead_s + 1, "window start")
        before, done_before = _premium_hist(rig.state), processed_readings(rig.state.counters())
        ingested_before = rig.state.counters()["ingested"]
        drain_at_start = rig.book.drain_levels().get(REGION)
        wait_for(lambda: time.time() >= r.end_ts, window_s + 1, "window end")
        after, done_after = _premium_hist(rig.state), processed_readings(rig.state.counters())
        ingested_in_window = rig.state.counters()["ingested"] - ingested_before
        loader.join()
        ingested = rig.state.counters()["ingested"]
        wait_for(lambda: processed_readings(rig.state.counters()) >= ingested, 30, "load drained")
        started = rig.event("started", r.reservation_id)
        finished = rig.event("succeeded", r.reservation_id)
        in_window = {b: n - before.get(b, 0) for b, n in after.items() if n > before.get(b, 0)}
        under_load = {
            b: n - hist_at_load.get(b, 0) for b, n in after.items() if n > hist_at_load.get(b, 0)
        }
        return {
            "window": {"start_ts": r.start_ts, "duration_s": window_s, "slots": r.slots},
            "operation": r.operation,
            "capacity_rps_measured": None if capacity_rps is None else round(capacity_rps),
            "capacity_probe_backlog_readings": probe_backlog,
            "load_rps": round(rate_rps),
            "load_fraction_of_capacity": None
            if capacity_rps is None
            else round(rate_rps / capacity_rps, 3),
            "offered_rps_during_window": round(ingested_in_window / window_s),
            "start_delay_s": None if started is None else round(float(started["delay_s"]), 4),
            "started_inside_window": started is not None
            and r.start_ts <= float(started["at_ts"]) < r.end_ts,
            "operation_succeeded": finished is not None,
            "drain_slots_at_start": drain_at_start,
            "processed_during_window": done_after - done_before,
            "processed_rps_during_window": round((done_after - done_before) / window_s),
            "premium_p99_ms_during_window": percentile_ms(in_window, 99),
            "premium_p99_ms_under_load": percentile_ms(under_load, 99),
            "premium_readings_during_window": sum(in_window.values()),
            "readings_ingested": ingested,
            "readings_processed": processed_readings(rig.state.counters()),
        }
    finally:
        rig.stop()


def failing_is_rebooked(
    redis_url: str, lead_s: float = 2.0, window_s: float = 3.0
) -> dict[str, Any]:
    """A window whose operation fails every try: retried, then rebooked with an alert."""
    rig = MaintenanceRig(
        redis_url, IOTSCHED_MAINTENANCE_MAX_TRIES="2", IOTSCHED_MAINTENANCE_BACKOFF_S="0.5"
    )
    try:
        # No registry stored: rebuild_registry has nothing to rebuild from and fails.
        rig.start(data=False)
        now = time.time()
        r = rig.book.book(REGION, now + lead_s, window_s, 1, "rebuild_registry", now)
        wait_for(lambda: rig.client.xlen(rig.keys.alerts) > 0, lead_s + window_s + 5, "alert")
        entries: Any = rig.client.xrange(rig.keys.alerts)
        alert = {text(k): text(v) for k, v in entries[0][1].items()}
        book = {x.reservation_id: x for x in rig.book.list()}
        new = book.get(alert.get("rebooked_as", ""))
        events = [e["event"] for e in rig.book.events() if e["reservation_id"] == r.reservation_id]
        return {
            "failed_window": {"id": r.reservation_id, "start_ts": r.start_ts, "end_ts": r.end_ts},
            "events": events,
            "alert": alert,
            "failed_window_released": r.reservation_id not in book,
            "rebooked": None
            if new is None
            else {
                "id": new.reservation_id,
                "start_ts": new.start_ts,
                "starts_after_failed_window": new.start_ts >= r.end_ts,
                "attempt": new.attempt,
                "operation": new.operation,
            },
        }
    finally:
        rig.stop()


def maintenance_bench(
    redis_url: str | None = None,
    rate_rps: float | None = None,
    load_fraction: float = LOAD_FRACTION,
) -> dict[str, Any]:
    with private_redis(redis_url) as url:
        return {
            "on_time_under_load": on_time_under_load(url, rate_rps, load_fraction=load_fraction),
            "failing_operation": failing_is_rebooked(url),
        }
