"""Behind ``iotsched storm-bench``: a reconnect flood on real workers, with the default settings.

The fleet reports at ``--rate-rps`` until every device's detector is warm, falls
silent for ``--silence-s`` (a gateway or network outage, longer than any device's
dropout limit), then comes back at ``--resume-rps`` (a fraction of capacity). Beat runs
as in a deployment (the control worker), so the dropout sweep looks at the fleet while
it is silent and folds the outage into one event per region before the devices come
back; a device whose return screening sees before the sweep ends a silence with a
dropout alert, folded downstream. The storm must fold into a handful of incidents and
premium must keep its bound throughout. Prints one JSON object: premium p99 over the
whole run and over the resumption, incidents raised (and which were storms), device
alerts, what the sweep folded or alerted, and accelerated readings (none should be
spent on a storm).
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from alerts.stream_sink import read_alerts
from bench.loadrun import DriveResult, Progress, drive, wait_drained
from bench.redis_run import RedisRun
from bench.worker_launch import start_control_worker
from ingest.synthetic import SyntheticStream
from scheduler.latency import counts_since, percentile_ms
from scheduler.routine import STARTED_STAGE
from stores.detector_store import RedisDetectorStore
from stores.queue_depth import queue_depths
from tasks.anomaly import ANOMALY_RUN_STAGE, TICK_RUN_STAGE
from tasks.dropout import SWEEP_RUN_STAGE
from workers.profiles import region_queues


@dataclass(frozen=True)
class StormConfig:
    devices: int = 60_000
    rate_rps: float = 30_000.0
    #: Warm-up long enough for every device's dropout interval (5 readings) to be known.
    warm_s: float = 16.0
    silence_s: float = 20.0
    resume_rps: float = 20_000.0
    resume_s: float = 6.0
    chunk: int = 2_000
    seed: int = 0

    @property
    def warm_readings(self) -> int:
        return int(self.rate_rps * self.warm_s)


def run_storm(redis_url: str, cfg: StormConfig, progress: Progress | None = None) -> dict[str, Any]:
    """A reconnect flood on a fresh key prefix; the JSON object of ``iotsched storm-bench``."""
    prefix = f"iotsched-storm-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    with RedisRun(redis_url, prefix, cfg.devices, seed=cfg.seed) as run_:
        control = start_control_worker(redis_url, prefix)
        try:
            return reconnect_flood(run_, cfg, progress)
        finally:
            control.terminate()
            control.wait(15)


def reconnect_flood(
    run_: Any, cfg: StormConfig, progress: Progress | None = None
) -> dict[str, Any]:
    """Warm up, fall silent, resume; the figures of the whole run (see module doc)."""
    assert run_.registry is not None
    store = run_.store
    stream = SyntheticStream(run_.registry, seed=cfg.seed)
    warm = drive(run_.producer, stream, cfg.warm_readings, cfg.rate_rps, cfg.chunk, None, progress)
    drained_warm, _ = wait_drained(store, 120.0, progress)
    alerts_before = store.counters().get("device_alerts", 0)
    # The outage: nothing is offered; the detectors keep each device's last reading.
    time.sleep(cfg.silence_s)
    before = store.latency_histogram("ingest", "premium")
    started_before = store.latency_histogram(STARTED_STAGE, "premium")
    sampler = QueueSampler(run_)
    sampler.start()
    resumed = drive(
        run_.producer,
        stream,
        int(cfg.resume_rps * cfg.resume_s),
        cfg.resume_rps,
        cfg.chunk,
        None,
        progress,
    )
    drained, _ = wait_drained(store, 120.0, progress)
    _wait_anomaly_work(run_, 60.0)
    sampler.stop()
    after = store.latency_histogram("ingest", "premium")
    during = counts_since(after, before)
    started = counts_since(store.latency_histogram(STARTED_STAGE, "premium"), started_before)
    counters = store.counters()
    detector = RedisDetectorStore(store.client, run_.keys)
    incidents = _incidents(read_alerts(store.client, run_.keys, count=10_000))
    processed = sum(v for k, v in counters.items() if k.startswith("processed:"))
    offered = warm.offered + resumed.offered
    return {
        "devices": cfg.devices,
        "warm": {"rate_rps": cfg.rate_rps, "seconds": cfg.warm_s, **_rates(warm)},
        "silence_s": cfg.silence_s,
        "resume": {"rate_rps": cfg.resume_rps, "seconds": cfg.resume_s, **_rates(resumed)},
        "premium_p99_ms": _r(percentile_ms(after, 99)),
        "premium_p99_ms_after_resume": _r(percentile_ms(during, 99)),
        "premium_p50_ms_after_resume": _r(percentile_ms(during, 50)),
        # Of that wait, the part until a worker started the premium task (the rest is the
        # task's own run): where premium's tail is spent.
        "premium_started_p99_ms_after_resume": _r(percentile_ms(started, 99)),
        # The longest each kind of queue grew (any region) from the resumption until drained.
        "max_queue_depth_after_resume": sampler.max_depth,
        # How long the storm's own tasks held a worker slot, over the whole run (ms).
        "task_run_ms": {
            stage.split(":", 1)[1]: _run_times(detector.detection_histogram(stage))
            for stage in (SWEEP_RUN_STAGE, ANOMALY_RUN_STAGE, TICK_RUN_STAGE)
        },
        "device_alerts": counters.get("device_alerts", 0),
        "device_alerts_after_resume": counters.get("device_alerts", 0) - alerts_before,
        "incidents": len(incidents),
        "storm_incidents": sorted(
            (
                {
                    "storm": i["storm"],
                    "region": i["region"],
                    # As of its latest notice: growth is re-notified every group interval.
                    "devices_at_last_notice": i["device_count"],
                }
                for i in incidents.values()
                if i.get("storm")
            ),
            key=lambda i: str(i["region"]),
        ),
        # The sweep: devices alerted one by one, silence events and the devices they hold.
        "sweep": {
            "device_alerts": counters.get("dropout_alerts", 0),
            "silence_events": counters.get("dropout_silence_events", 0),
            "folded_devices": counters.get("dropout_folded", 0),
            # Of its device alerts: devices folded, still silent once their outage was over.
            "alerts_after_outage": counters.get("dropout_alerts_after_outage", 0),
        },
        # Screening: returns from a shared silence folded into events (none alerted alone).
        "screening": {
            "silence_events": counters.get("screen_silence_events", 0),
            "folded_returns": counters.get("screen_folded_returns", 0),
        },
        "accelerated_readings": counters.get("accelerated_readings", 0),
        "offered": offered,
        "processed": processed,
        "lost": max(0, counters.get("ingested", 0) - processed - counters.get("dead_lettered", 0)),
        "pushed_back": counters.get("pushed_back", 0),
        "drained": drained_warm and drained,
    }


class QueueSampler:
    """Samples every region queue's depth in a thread; keeps each kind's maximum."""

    def __init__(self, run_: Any, period_s: float = 0.05) -> None:
        self.run_ = run_
        self.period_s = period_s
        self.max_depth: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5.0)

    def _loop(self) -> None:
        regions = self.run_.settings.regions
        queues = {q: q.split(".", 1)[-1] for r in regions for q in region_queues(r)}
        while not self._stop.wait(self.period_s):
            depths = queue_depths(self.run_.store.client, self.run_.keys, list(queues))
            for queue, depth in depths.items():
                kind = queues[queue]
                self.max_depth[kind] = max(self.max_depth.get(kind, 0), int(depth))


def _wait_anomaly_work(run_: Any, timeout_s: float) -> None:
    """Until every queue is empty and the incidents' group wait has passed."""
    queues = [q for r in run_.settings.regions for q in region_queues(r)]
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if not any(queue_depths(run_.store.client, run_.keys, queues).values()):
            break
        time.sleep(0.1)
    # An incident's first notice waits group_wait_s (0.5 s) after it opens.
    time.sleep(1.5)


def _incidents(documents: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The newest document of each incident, by id."""
    latest: dict[str, dict[str, Any]] = {}
    for doc in documents:
        latest[str(doc["incident_id"])] = doc
    return latest


def _rates(result: DriveResult) -> dict[str, Any]:
    return {
        "offered_rps": round(result.offered_rps, 1),
        "admitted_rps": round(result.admitted_rps, 1),
    }


def _run_times(counts: dict[int, int]) -> dict[str, Any]:
    return {
        "runs": sum(counts.values()),
        "p50": _r(percentile_ms(counts, 50)),
        "p99": _r(percentile_ms(counts, 99)),
        "max": _r(percentile_ms(counts, 100)),
    }


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 2)
