"""Scaling figures on a real worker: reaction to a load step, drain, shrink, steady wastage.

One ``celery worker --autoscale MAX,MIN`` for one region (started by the
Supervisor), on a real Redis under a key prefix the run owns and deletes.

1. calibrate: a few batches, so the autoscaler has measured its service rate;
2. steady: premium batches at ``steady_load`` × one slot's measured rate; the
   pool's slots and busy slots are sampled from its heartbeats; wastage =
   1 − Σbusy ÷ Σslots over the second half (idle slot-seconds ÷ provisioned);
3. step: a burst of standard batches at once. reaction_s = step → the pool
   reports the size the autoscaler asked for; drained_s = step → queue empty
   and every published reading processed;
4. shrink: drained → pool back at MIN (the stabilisation window plus a tick).

Heartbeats come every ``refresh_s``, so times are measured to that resolution.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import redis

from scheduler.codec import encode_batch
from scheduler.model import Batch, queue_name
from scheduler.settings import Settings
from stores.keys import Keys
from stores.pool_heartbeats import PoolBeat, PoolHeartbeats
from stores.queue_depth import QueueDepthReader
from stores.redis_state import RedisStateStore
from tasks.app import make_app
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
    steady_load: float = 1.5
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
    app = make_app(
        broker_url=cfg.redis_url,
        broker_transport_options={
            "queue_order_strategy": "priority",
            "global_keyprefix": keys.broker_prefix,
        },
    )
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

    def publish(tier: str, batches: int) -> None:
        nonlocal published
        for _ in range(batches):
            batch = make_batch(cfg.region, tier, cfg.batch_readings, rng)
            app.send_task(
                ROUTINE_TASK,
                args=(encode_batch(batch),),
                queue=queue_name(cfg.region, tier),
                serializer="msgpack",
            )
            published += len(batch)

    def processed() -> int:
        counters = store.counters()
        return sum(v for k, v in counters.items() if k.startswith("processed:"))

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

        publish("premium", cfg.calibrate_batches)
        _wait(drained, cfg.timeout_s, "calibration batches", status)
        service_rps = sampler.samples[-1].service_rps

        rate = cfg.steady_load * service_rps
        steady_start = time.time()
        sent = 0
        while time.time() - steady_start < cfg.steady_s:
            due = int((time.time() - steady_start) * rate)
            if due > sent:
                publish("premium", due - sent)
                sent = due
            time.sleep(0.005)
        steady = sampler.since(steady_start + cfg.steady_s / 2)
        slot_samples = sum(b.slots for b in steady)
        busy_samples = sum(b.busy for b in steady)
        _wait(drained, cfg.timeout_s, "the steady load", status)
        # A clean step: let the pool settle back to its minimum first.
        _wait(
            lambda: sampler.samples[-1].slots == cfg.min_slots,
            cfg.scale_down_window_s + cfg.timeout_s,
            "the pool to settle before the step",
            status,
        )
        before = sampler.samples[-1].slots

        step_ts = time.time()
        publish("standard", cfg.burst_batches)
        publish_s = time.time() - step_ts

        def matched() -> PoolBeat | None:
            for beat in sampler.since(step_ts):
                if beat.target_slots > before and beat.slots >= beat.target_slots:
                    return beat
            return None

        _wait(lambda: matched() is not None, cfg.timeout_s, "the pool to grow", status)
        grown = matched()
        assert grown is not None
        drained_ts = _wait(drained, cfg.timeout_s, "the burst to drain", status)
        burst = sampler.since(step_ts)
        first_up = next(b for b in burst if b.target_slots > before)
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
            (round(b.at_ts - t0, 2), b.slots, b.busy, b.held, b.target_slots, b.reason)
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
            "steady": {
                "arrival_tasks_s": round(rate, 1),
                "seconds_sampled": round(cfg.steady_s / 2, 1),
                "mean_slots": round(slot_samples / max(1, len(steady)), 2),
                "utilization": round(busy_samples / max(1, slot_samples), 3),
                "wastage": round(1 - busy_samples / max(1, slot_samples), 3),
            },
            "step": {
                "batches": cfg.burst_batches,
                "publish_s": round(publish_s, 2),
                "pool_before": before,
                "first_target": first_up.target_slots,
                "detect_s": round(first_up.at_ts - step_ts, 2),
                "desired_slots": grown.target_slots,
                "peak_target": max(b.target_slots for b in burst),
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
