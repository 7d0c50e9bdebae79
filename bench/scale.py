"""Scaling figures on a real worker: reaction to a load step, drain, shrink, steady wastage.

One ``celery worker --autoscale MAX,MIN`` for one region (started by the
Supervisor), on a real Redis under a key prefix the run owns and deletes.

1. calibrate: a few batches, so the autoscaler has measured its service rate;
2. steady: premium batches at ``steady_load`` × one slot's measured rate; over
   the second half, provisioned slot-seconds integrate the pool size from its
   heartbeats and busy slot-seconds are the task-seconds its processes report
   (workers/busy_time.py); wastage = idle ÷ provisioned slot-seconds. With
   integer slots it cannot go below 1 − mean_busy ÷ ceil(mean_busy) (the floor);
3. step: a burst of standard batches at once. reaction_s = step → the pool
   reports the size the autoscaler asked for; drained_s = step → queue empty
   and every published reading processed;
4. shrink: drained → pool back at MIN (the stabilisation window plus a tick).

Heartbeats come every ``refresh_s``, so times are measured to that resolution.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np
import redis

from scheduler.codec import encode_batch
from scheduler.model import Batch, queue_name
from scheduler.settings import Settings
from stores.keys import Keys
from stores.pool_heartbeats import PoolBeat, PoolHeartbeats
from stores.protocols import processed_readings
from stores.queue_depth import QueueDepthReader
from stores.redis_state import RedisStateStore
from tasks.app import broker_app
from tasks.routine import ROUTINE_TASK
from workers.supervisor import FleetConfig, Supervisor


@dataclass(frozen=True)
class BenchConfig:
    redis_url: str
    region: str = "eu-west"
    max_slots: int = 4
    min_slots: int = 1
    scale_down_window_s: float = 4.0
    refresh_s: float = 0.1
    batch_readings: int = 2_000
    calibrate_batches: int = 60
    steady_s: float = 10.0
    #: Steady arrival as a multiple of one slot's measured service rate.
    steady_load: float = 0.9
    burst_batches: int = 400
    timeout_s: float = 40.0
    seed: int = 0
    #: Include every heartbeat (seconds from start, slots, busy, target, service rate).
    trace: bool = False


def make_batch(region: str, tier: str, n: int, rng: np.random.Generator) -> Batch:
    now = time.time()
    return Batch(
        batch_id=uuid.uuid4().hex,
        region=region,
        tier=tier,
        metrics=("value",),
        device_id=rng.integers(0, 100_000, n).astype(np.uint64),
        ts=np.full(n, now),
        values=rng.normal(20.0, 2.0, (n, 1)),
        ingest_ts=np.full(n, now),
    )


class _Sampler(threading.Thread):
    """Polls the worker's heartbeats; keeps (seen_ts, beat) for every new beat."""

    def __init__(self, beats: PoolHeartbeats, node: str, interval_s: float) -> None:
        super().__init__(daemon=True)
        self.beats, self.node, self.interval_s = beats, node, interval_s
        self.samples: list[PoolBeat] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.wait(self.interval_s / 2):
            beat = self.beats.read().get(self.node)
            if beat is not None and (not self.samples or beat.at_ts > self.samples[-1].at_ts):
                self.samples.append(beat)

    def since(self, ts: float) -> list[PoolBeat]:
        return [b for b in list(self.samples) if b.at_ts >= ts]


def span_s(beats: list[PoolBeat]) -> float:
    return beats[-1].at_ts - beats[0].at_ts if len(beats) > 1 else 0.0


def slot_seconds(beats: list[PoolBeat]) -> tuple[float, float]:
    """(provisioned, busy) slot-seconds between the first and last beat.

    Provisioned integrates the pool size over time; busy is the task-seconds
    the pool's processes report running (exact, not sampled).
    """
    if len(beats) < 2:
        return 0.0, 0.0
    provisioned = sum(a.slots * (b.at_ts - a.at_ts) for a, b in pairwise(beats))
    return provisioned, beats[-1].busy_s - beats[0].busy_s


def _wait(
    cond: Callable[[], bool],
    timeout_s: float,
    what: str,
    detail: Callable[[], str] = lambda: "",
    poll_s: float = 0.02,
) -> float:
    deadline = time.time() + timeout_s
    while not cond():
        if time.time() > deadline:
            raise TimeoutError(f"scale-bench: timed out waiting for {what} {detail()}")
        time.sleep(poll_s)
    return time.time()


def run_bench(cfg: BenchConfig) -> dict[str, Any]:
    prefix = f"iotsched-scalebench-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        redis_url=cfg.redis_url,
        key_prefix=prefix,
        regions=(cfg.region,),
        scale_down_window_s=cfg.scale_down_window_s,
        autoscale_refresh_s=cfg.refresh_s,
    )
    keys = Keys(prefix)
    client = redis.Redis.from_url(cfg.redis_url)
    store = RedisStateStore(client, keys)
    app = broker_app(cfg.redis_url, keys)
    fleet = FleetConfig(
        regions=(cfg.region,),
        max_slots=cfg.max_slots,
        min_slots=cfg.min_slots,
        min_replicas=1,
        max_replicas=1,
        env_extra={
            "IOTSCHED_REGIONS": cfg.region,
            "IOTSCHED_SCALE_DOWN_WINDOW_S": str(cfg.scale_down_window_s),
            "IOTSCHED_AUTOSCALE_REFRESH_S": str(cfg.refresh_s),
        },
    )
    sup = Supervisor(settings, fleet, app, client)
    rng = np.random.default_rng(cfg.seed)
    queues = [queue_name(cfg.region, t) for t in ("premium", "standard")]
    reader = QueueDepthReader(client, keys)
    published = 0

    def encode(tier: str, batches: int) -> list[dict[str, Any]]:
        return [
            encode_batch(make_batch(cfg.region, tier, cfg.batch_readings, rng))
            for _ in range(batches)
        ]

    def send(tier: str, payloads: list[dict[str, Any]]) -> None:
        nonlocal published
        for payload in payloads:
            app.send_task(
                ROUTINE_TASK, args=(payload,), queue=queue_name(cfg.region, tier),
                serializer="msgpack",
            )  # fmt: skip
            published += int(payload["n"])

    def processed() -> int:
        counters = store.counters()
        return processed_readings(counters)

    def drained() -> bool:
        depth = reader.sample(queues).depth
        return sum(depth.values()) == 0 and processed() >= published

    def status() -> str:
        last = sampler.samples[-1] if sampler.samples else None
        depth = dict(reader.sample(queues).depth)
        return f"(depth {depth}, processed {processed()} of {published}, pool {last})"

    worker = sup.start_worker(cfg.region)
    sampler = _Sampler(sup.heartbeats, worker.node, cfg.refresh_s)
    try:
        t0 = time.time()
        sampler.start()
        _wait(lambda: bool(sampler.samples), cfg.timeout_s, "the worker's first heartbeat")
        ready_s = time.time() - t0

        # One batch at a time: one slot's service rate, not a contended pool's.
        before_calibration = sampler.samples[-1]
        for payload in encode("premium", cfg.calibrate_batches):
            send("premium", [payload])
            _wait(lambda: processed() >= published, cfg.timeout_s, "a calibration batch", status)
        calibrated = _wait(
            lambda: (
                sampler.samples[-1].finished - before_calibration.finished >= cfg.calibrate_batches
            ),
            cfg.timeout_s,
            "the calibration heartbeat",
            status,
        )
        after_calibration = sampler.since(calibrated - cfg.refresh_s)[-1]
        service_rps = (after_calibration.finished - before_calibration.finished) / max(
            1e-9, after_calibration.busy_s - before_calibration.busy_s
        )

        rate = cfg.steady_load * service_rps
        steady_payloads = encode("premium", int(rate * cfg.steady_s) + 1)
        steady_start = time.time()
        sent = 0
        while time.time() - steady_start < cfg.steady_s:
            due = min(len(steady_payloads), int((time.time() - steady_start) * rate))
            if due > sent:
                send("premium", steady_payloads[sent:due])
                sent = due
            time.sleep(0.002)
        steady = sampler.since(steady_start + cfg.steady_s / 2)
        provisioned_slot_s, busy_slot_s = slot_seconds(steady)
        steady_service_rps = (steady[-1].finished - steady[0].finished) / max(
            1e-9, steady[-1].busy_s - steady[0].busy_s
        )
        # What the load needed, in slots: busy slot-seconds over the span. Integer
        # slots cannot be fuller than mean_busy / ceil(mean_busy): the floor.
        mean_busy = busy_slot_s / max(1e-9, span_s(steady))
        finished_rps = (steady[-1].finished - steady[0].finished) / max(1e-9, span_s(steady))
        _wait(drained, cfg.timeout_s, "the steady load", status)
        # A clean step: let the pool settle back to its minimum first.
        _wait(
            lambda: sampler.samples[-1].slots == cfg.min_slots,
            cfg.scale_down_window_s + cfg.timeout_s,
            "the pool to settle before the step",
            status,
        )
        before = sampler.samples[-1].slots

        burst_payloads = encode("standard", cfg.burst_batches)
        step_ts = time.time()
        send("standard", burst_payloads)
        publish_s = time.time() - step_ts

        def matched(target: Callable[[PoolBeat], int]) -> PoolBeat | None:
            for beat in sampler.since(step_ts):
                if target(beat) > before and beat.slots >= target(beat):
                    return beat
            return None

        _wait(
            lambda: matched(lambda b: b.target_slots) is not None,
            cfg.timeout_s,
            "the pool to grow",
            status,
        )
        grown = matched(lambda b: b.target_slots)
        assert grown is not None
        drained_ts = _wait(drained, cfg.timeout_s, "the burst to drain", status)
        burst = sampler.since(step_ts)
        first_up = next(b for b in burst if b.target_slots > before)
        peak_target = max(b.target_slots for b in burst)
        peak = matched(lambda b: peak_target)
        shrunk_ts = _wait(
            lambda: (
                sampler.samples[-1].slots == cfg.min_slots
                and sampler.samples[-1].at_ts > drained_ts
            ),
            cfg.scale_down_window_s + cfg.timeout_s,
            "the pool to shrink",
            status,
        )
        done = processed()
        trace = [
            (round(b.at_ts - t0, 2), b.slots, round(b.busy_s, 2), b.held, b.target_slots, b.reason)
            for b in sampler.samples
        ]
        return {
            "region": cfg.region,
            "autoscale": f"{cfg.max_slots},{cfg.min_slots}",
            "refresh_s": cfg.refresh_s,
            "scale_down_window_s": cfg.scale_down_window_s,
            "batch_readings": cfg.batch_readings,
            "worker_ready_s": round(ready_s, 2),
            "service_tasks_per_slot_s": round(service_rps, 1),
            "autoscaler_service_estimate": round(after_calibration.service_rps, 1),
            "steady": {
                "arrival_tasks_s": round(rate, 1),
                "seconds_sampled": round(cfg.steady_s / 2, 1),
                "finished_tasks_s": round(finished_rps, 1),
                "service_tasks_per_slot_s": round(steady_service_rps, 1),
                "mean_busy_slots": round(mean_busy, 2),
                "wastage_floor": round(1 - mean_busy / max(1, math.ceil(mean_busy)), 3),
                "mean_slots": round(provisioned_slot_s / max(1e-9, span_s(steady)), 2),
                "utilization": round(busy_slot_s / max(1e-9, provisioned_slot_s), 3),
                "wastage": round(1 - busy_slot_s / max(1e-9, provisioned_slot_s), 3),
                # What the policy added on top of the floor; negative: part of the time
                # the pool ran below ceil(mean_busy_slots) (it queued instead).
                "policy_excess": round(
                    mean_busy / max(1, math.ceil(mean_busy))
                    - busy_slot_s / max(1e-9, provisioned_slot_s),
                    3,
                ),
            },
            "step": {
                "batches": cfg.burst_batches,
                "publish_s": round(publish_s, 2),
                "pool_before": before,
                "first_target": first_up.target_slots,
                "detect_s": round(first_up.at_ts - step_ts, 2),
                "desired_slots": grown.target_slots,
                "peak_target": peak_target,
                "peak_matched_s": None if peak is None else round(peak.at_ts - step_ts, 2),
                "reaction_s": round(grown.at_ts - step_ts, 2),
                "drained_s": round(drained_ts - step_ts, 2),
                "shrunk_to_min_s_after_drain": round(shrunk_ts - drained_ts, 2),
            },
            "readings_published": published,
            "readings_processed": done,
            "lost": published - done,
            **({"trace": trace} if cfg.trace else {}),
        }
    finally:
        sampler.stop_event.set()
        sup.stop()
        app.close()
        store.delete_all()
