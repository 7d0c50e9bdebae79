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

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.pool_sampling import PoolSampler, steady_figures
from bench.sending import bench_publisher, send_batches
from bench.worker_launch import wait_for
from scheduler.model import Batch, queue_name
from scheduler.settings import Settings
from stores.connection import connect
from stores.keys import Keys
from stores.pool_heartbeats import PoolBeat
from stores.protocols import processed_readings
from stores.queue_depth import QueueDepthReader
from stores.redis_state import RedisStateStore
from tasks.app import broker_app
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


def run_bench(cfg: BenchConfig) -> dict[str, Any]:
    """Calibrate, steady load, a step, the shrink; the JSON object of ``iotsched scale-bench``."""
    rig = ScaleRig(cfg)
    try:
        return rig.run()
    finally:
        rig.close()


@dataclass
class Calibration:
    ready_s: float
    #: Tasks per second one slot finished, from the worker's own busy time.
    service_rps: float
    #: What the autoscaler itself estimated by the end of calibration.
    autoscaler_estimate: float


class ScaleRig:
    """One supervised worker for one region, its heartbeat sampler and the bench's sends."""

    def __init__(self, cfg: BenchConfig) -> None:
        self.cfg = cfg
        prefix = f"iotsched-scalebench-{uuid.uuid4().hex[:8]}"
        settings = Settings(
            redis_url=cfg.redis_url,
            key_prefix=prefix,
            regions=(cfg.region,),
            scale_down_window_s=cfg.scale_down_window_s,
            autoscale_refresh_s=cfg.refresh_s,
            # The autoscaled pool alone: a premium lane is a fixed slot outside it (idle it
            # costs a process's memory, not CPU), and it would take the steady premium load.
            premium_guarantee_slots=0,
        )
        keys = Keys(prefix)
        client = connect(cfg.redis_url)
        self.store = RedisStateStore(client, keys)
        self.app = broker_app(cfg.redis_url, keys)
        self.publisher = bench_publisher(self.app, screening=False)
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
                "IOTSCHED_PREMIUM_GUARANTEE_SLOTS": "0",
            },
        )
        self.sup = Supervisor(settings, fleet, self.app, client)
        self.rng = np.random.default_rng(cfg.seed)
        self.queues = [queue_name(cfg.region, t) for t in ("premium", "standard")]
        self.reader = QueueDepthReader(client, keys)
        self.published = 0
        self.sampler: PoolSampler | None = None

    @property
    def samples(self) -> list[PoolBeat]:
        assert self.sampler is not None
        return self.sampler.samples

    def batches(self, tier: str, count: int) -> list[Batch]:
        """Batches made ahead of a paced phase, so making them never holds the pace up."""
        return [
            make_batch(self.cfg.region, tier, self.cfg.batch_readings, self.rng)
            for _ in range(count)
        ]

    def send(self, batches: list[Batch]) -> None:
        self.published += send_batches(self.publisher, batches)

    def processed(self) -> int:
        return processed_readings(self.store.counters())

    def drained(self) -> bool:
        depth = self.reader.sample(self.queues).depth
        return sum(depth.values()) == 0 and self.processed() >= self.published

    def status(self) -> str:
        last = self.samples[-1] if self.samples else None
        depth = dict(self.reader.sample(self.queues).depth)
        return f"(depth {depth}, processed {self.processed()} of {self.published}, pool {last})"

    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        worker = self.sup.start_worker(cfg.region)
        self.sampler = PoolSampler(self.sup.heartbeats, worker.node, cfg.refresh_s)
        t0 = time.time()
        self.sampler.start()
        wait_for(lambda: bool(self.samples), cfg.timeout_s, "the worker's first heartbeat")
        calibration = self.calibrate(time.time() - t0)
        steady = self.steady(calibration.service_rps)
        step = self.step()
        trace = [
            (round(b.at_ts - t0, 2), b.slots, round(b.busy_s, 2), b.held, b.target_slots, b.reason)
            for b in self.samples
        ]
        done = self.processed()
        return {
            "region": cfg.region,
            "autoscale": f"{cfg.max_slots},{cfg.min_slots}",
            "refresh_s": cfg.refresh_s,
            "scale_down_window_s": cfg.scale_down_window_s,
            "batch_readings": cfg.batch_readings,
            "worker_ready_s": round(calibration.ready_s, 2),
            "service_tasks_per_slot_s": round(calibration.service_rps, 1),
            "autoscaler_service_estimate": round(calibration.autoscaler_estimate, 1),
            "steady": steady,
            "step": step,
            "readings_published": self.published,
            "readings_processed": done,
            "lost": self.published - done,
            **({"trace": trace} if cfg.trace else {}),
        }

    def calibrate(self, ready_s: float) -> Calibration:
        """One batch at a time: one slot's service rate, not a contended pool's."""
        cfg = self.cfg
        before = self.samples[-1]
        for batch in self.batches("premium", cfg.calibrate_batches):
            self.send([batch])
            wait_for(
                lambda: self.processed() >= self.published,
                cfg.timeout_s,
                "a calibration batch",
                self.status,
            )
        calibrated = wait_for(
            lambda: self.samples[-1].finished - before.finished >= cfg.calibrate_batches,
            cfg.timeout_s,
            "the calibration heartbeat",
            self.status,
        )
        assert self.sampler is not None
        after = self.sampler.since(calibrated - cfg.refresh_s)[-1]
        service_rps = (after.finished - before.finished) / max(1e-9, after.busy_s - before.busy_s)
        return Calibration(ready_s, service_rps, after.service_rps)

    def steady(self, service_rps: float) -> dict[str, Any]:
        """Premium at ``steady_load`` × one slot's rate; wastage over the second half."""
        cfg = self.cfg
        rate = cfg.steady_load * service_rps
        ready = self.batches("premium", int(rate * cfg.steady_s) + 1)
        steady_start = time.time()
        sent = 0
        while time.time() - steady_start < cfg.steady_s:
            due = min(len(ready), int((time.time() - steady_start) * rate))
            if due > sent:
                self.send(ready[sent:due])
                sent = due
            time.sleep(0.002)
        assert self.sampler is not None
        steady = self.sampler.since(steady_start + cfg.steady_s / 2)
        wait_for(self.drained, cfg.timeout_s, "the steady load", self.status)
        return steady_figures(steady, rate, cfg.steady_s / 2)

    def step(self) -> dict[str, Any]:
        """A burst of standard batches at once: the pool's reaction, the drain, the shrink."""
        cfg = self.cfg
        assert self.sampler is not None
        sampler = self.sampler
        # A clean step: let the pool settle back to its minimum first.
        wait_for(
            lambda: self.samples[-1].slots == cfg.min_slots,
            cfg.scale_down_window_s + cfg.timeout_s,
            "the pool to settle before the step",
            self.status,
        )
        before = self.samples[-1].slots
        burst_batches = self.batches("standard", cfg.burst_batches)
        step_ts = time.time()
        self.send(burst_batches)
        publish_s = time.time() - step_ts

        def matched(target: Callable[[PoolBeat], int]) -> PoolBeat | None:
            for beat in sampler.since(step_ts):
                if target(beat) > before and beat.slots >= target(beat):
                    return beat
            return None

        wait_for(
            lambda: matched(lambda b: b.target_slots) is not None,
            cfg.timeout_s,
            "the pool to grow",
            self.status,
        )
        grown = matched(lambda b: b.target_slots)
        assert grown is not None
        drained_ts = wait_for(self.drained, cfg.timeout_s, "the burst to drain", self.status)
        burst = sampler.since(step_ts)
        first_up = next(b for b in burst if b.target_slots > before)
        peak_target = max(b.target_slots for b in burst)
        peak = matched(lambda b: peak_target)
        shrunk_ts = wait_for(
            lambda: self.samples[-1].slots == cfg.min_slots and self.samples[-1].at_ts > drained_ts,
            cfg.scale_down_window_s + cfg.timeout_s,
            "the pool to shrink",
            self.status,
        )
        return {
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
        }

    def close(self) -> None:
        if self.sampler is not None:
            self.sampler.stop_event.set()
        self.sup.stop()
        self.app.close()
        self.store.delete_all()
