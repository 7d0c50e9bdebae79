"""A local fleet controller: worker processes per region on this machine, sized from
the autoscalers' region figures, with the desired replica count published for an
orchestrator (``docker compose up --scale worker-<region>=N`` or a Kubernetes HPA).

Each worker runs ``--autoscale MAX,MIN``; its autoscaler publishes the slots
the region needs (``region_slots``), already held over the stabilisation
window. The supervisor wants ``ceil(region_slots / MAX)`` replicas, within
[min_replicas, max_replicas]. Scale-in drains first: the newest worker is told
to stop consuming (``cancel_consumer``), its in-flight and prefetched messages
finish (its heartbeat shows ``held == 0``), then SIGTERM (Celery's warm
shutdown). A drain that takes longer than ``drain_timeout_s`` is ended the same
way: warm shutdown still finishes the running task, and with acks_late the
broker redelivers anything left, so nothing is lost.

Premium lanes: each region also runs one premium lane (``--role premium``, premium
work only, ``IOTSCHED_PREMIUM_GUARANTEE_SLOTS`` pool processes), started with the
fleet, started again if it exits, never scaled or drained: it is premium's guaranteed
slot, and idle it costs memory, not CPU.

Maintenance: the region's pre-drain level (``Keys.maintenance_drain``) caps the
replicas at ``ceil((budget - drain) / MAX)``, read directly rather than waiting
for the autoscalers' next figures, so surplus workers drain ahead of a window
(each remaining autoscaler caps its own pool at its share of what is left).
"""

from __future__ import annotations

import math
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis
from celery import Celery

from scheduler.capacity import CapacityLedger
from scheduler.pool_sizing import region_budget
from scheduler.region_sizing import data_cap_slots as region_data_cap_slots
from scheduler.settings import Settings
from stores.health_store import DATA_ROLE, text
from stores.keys import Keys
from stores.pool_heartbeats import PoolBeat, PoolHeartbeats
from workers.cluster import PROJECT_ROOT, worker_env
from workers.pool_refresher import heartbeat_fresh_s
from workers.profiles import region_queues, worker_argv


@dataclass
class WorkerProcess:
    node: str
    region: str
    proc: subprocess.Popen[bytes]
    started_ts: float
    draining_since_ts: float | None = None
    terminated_ts: float | None = None


@dataclass(frozen=True)
class FleetConfig:
    regions: tuple[str, ...]
    #: Pool bounds of each worker (``--autoscale MAX,MIN``).
    max_slots: int = 4
    min_slots: int = 1
    min_replicas: int = 1
    max_replicas: int = 4
    drain_timeout_s: float = 30.0
    #: A worker still running this long after SIGTERM is killed.
    stop_timeout_s: float = 30.0
    loglevel: str = "WARNING"
    env_extra: Mapping[str, str] = field(default_factory=dict)


def desired_replicas(
    region: str,
    beats: Iterable[PoolBeat],
    cfg: FleetConfig,
    now_ts: float,
    fresh_s: float,
    data_cap_slots: int | None = None,
) -> int | None:
    """Replicas the region needs from its workers' latest figures; None when none reported.

    ``data_cap_slots`` (budget minus the maintenance pre-drain level) bounds the
    result from above, over ``min_replicas`` too: maintenance does not wait.
    """
    slots = [
        b.region_slots
        for b in beats
        if b.region == region
        and b.role == DATA_ROLE  # a premium lane's figures are its own, not the data pools'
        and b.region_slots is not None
        and b.fresh(now_ts, fresh_s)
    ]
    if not slots:
        return None
    wanted = math.ceil(max(slots) / cfg.max_slots)
    return cap_replicas(min(cfg.max_replicas, max(cfg.min_replicas, wanted)), cfg, data_cap_slots)


def cap_replicas(replicas: int, cfg: FleetConfig, data_cap_slots: int | None) -> int:
    """``replicas`` reduced to what ``data_cap_slots`` can employ (None: no cap)."""
    if data_cap_slots is None:
        return replicas
    return min(replicas, math.ceil(max(0, data_cap_slots) / cfg.max_slots))


def data_cap_slots(settings: Settings, drain_slots: int) -> int:
    """Slots a region's data pools may hold while maintenance holds ``drain_slots``.

    The level is clipped as the autoscalers' sizing clips it: never into the premium guarantee.
    """
    return region_data_cap_slots(CapacityLedger(region_budget(settings)), drain_slots)


def compose_scale_args(replicas: Mapping[str, int]) -> str:
    """The ``docker compose up`` arguments that apply ``replicas``."""
    return " ".join(f"--scale worker-{r}={n}" for r, n in sorted(replicas.items()))


class Supervisor:
    """Adds and removes ``celery worker`` processes per region; call ``step()`` periodically."""

    def __init__(
        self,
        settings: Settings,
        cfg: FleetConfig,
        app: Celery,
        client: redis.Redis | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.cfg = cfg
        self.app = app
        self.keys = Keys(settings.key_prefix)
        self.client = client or redis.Redis.from_url(settings.redis_url, socket_timeout=5.0)
        self.heartbeats = PoolHeartbeats(self.client, self.keys)
        self.clock = clock
        self.workers: list[WorkerProcess] = []
        self.lanes: dict[str, WorkerProcess] = {}
        self.replicas: dict[str, int] = {}
        self._serial = 0
        self._host = socket.gethostname()

    def running(self, region: str) -> list[WorkerProcess]:
        """The region's workers that consume (not draining, not stopping)."""
        return [
            w
            for w in self.workers
            if w.region == region and w.draining_since_ts is None and w.terminated_ts is None
        ]

    def start_worker(self, region: str) -> WorkerProcess:
        self._serial += 1
        argv = worker_argv(
            region,
            "data",
            concurrency=self.cfg.max_slots,
            loglevel=self.cfg.loglevel,
            extra=["--autoscale", f"{self.cfg.max_slots},{self.cfg.min_slots}"],
        )
        worker = self._spawn(region, argv, f"data-{region}-{self._serial}@{self._host}")
        self.workers.append(worker)
        return worker

    def ensure_lanes(self) -> None:
        """Start each region's premium lane if it is not running (first step, or it exited)."""
        slots = self.settings.premium_guarantee_slots
        if slots < 1:
            return
        for region in self.cfg.regions:
            lane = self.lanes.get(region)
            if lane is None or lane.proc.poll() is not None:
                argv = worker_argv(region, "premium", concurrency=slots, loglevel=self.cfg.loglevel)
                self.lanes[region] = self._spawn(region, argv, f"premium-{region}@{self._host}")

    def _spawn(self, region: str, argv: list[str], node: str) -> WorkerProcess:
        argv[argv.index("-n") + 1] = node
        env = worker_env(self.settings.redis_url, self.settings.key_prefix, **self.cfg.env_extra)
        proc = subprocess.Popen(
            argv, env=env, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=sys.stderr
        )
        return WorkerProcess(node, region, proc, self.clock())

    def drain(self, worker: WorkerProcess) -> None:
        """Stop the worker consuming; ``step()`` ends it once it holds nothing."""
        worker.draining_since_ts = self.clock()
        for queue in region_queues(worker.region):
            self.app.control.cancel_consumer(queue, destination=[worker.node])

    def step(self) -> dict[str, int]:
        """Reconcile once: publish desired replicas, start or drain workers, end drains."""
        now = self.clock()
        beats = self.heartbeats.read()
        drain = self.drain_levels()
        fresh_s = heartbeat_fresh_s(self.settings)
        self.ensure_lanes()
        for region in self.cfg.regions:
            cap = data_cap_slots(self.settings, drain.get(region, 0))
            wanted = desired_replicas(region, beats.values(), self.cfg, now, fresh_s, cap)
            running = self.running(region)
            if wanted is None:
                # No figures yet (nothing started, or every worker restarting).
                wanted = cap_replicas(max(self.cfg.min_replicas, len(running)), self.cfg, cap)
            self.replicas[region] = wanted
            for _ in range(wanted - len(running)):
                self.start_worker(region)
            if len(running) > wanted:
                for worker in sorted(running, key=lambda w: w.started_ts)[wanted:]:
                    self.drain(worker)
        # redis-py types mapping keys as a union that dict[str, int] does not match.
        self.client.hset(self.keys.scaling_replicas, mapping=self.replicas)  # type: ignore[arg-type]
        self.finish_drains(beats, now)
        return dict(self.replicas)

    def drain_levels(self) -> dict[str, int]:
        """Maintenance pre-drain level per region, as last published by the maintenance tick."""
        raw: Any = self.client.hgetall(self.keys.maintenance_drain)
        return {text(k): int(v) for k, v in raw.items()}

    def finish_drains(self, beats: Mapping[str, PoolBeat], now: float) -> None:
        """SIGTERM drained workers that hold nothing (or ran out of time); reap exited ones."""
        for worker in list(self.workers):
            if worker.proc.poll() is not None:
                self.workers.remove(worker)
                self.heartbeats.forget(worker.node)
                continue
            if worker.terminated_ts is not None:
                if now - worker.terminated_ts > self.cfg.stop_timeout_s:
                    worker.proc.kill()
                continue
            if worker.draining_since_ts is None:
                continue
            beat = beats.get(worker.node)
            emptied = (
                beat is not None
                and not beat.consuming
                and beat.held == 0
                and beat.at_ts > worker.draining_since_ts
            )
            if emptied or now - worker.draining_since_ts > self.cfg.drain_timeout_s:
                worker.proc.send_signal(signal.SIGTERM)
                worker.terminated_ts = now

    def stop(self, timeout_s: float = 20.0) -> None:
        """Warm shutdown of every worker; kill what is still running after ``timeout_s``."""
        everyone = [*self.workers, *self.lanes.values()]
        for worker in everyone:
            if worker.proc.poll() is None:
                worker.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for worker in everyone:
            try:
                worker.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.proc.kill()
                worker.proc.wait()
            self.heartbeats.forget(worker.node)
        self.workers.clear()
        self.lanes.clear()


def supervise(
    sup: Supervisor,
    interval_s: float,
    duration_s: float | None,
    report: Callable[[dict[str, int]], None],
    stopped: Callable[[], bool] = lambda: False,
) -> None:
    """Run ``step()`` every ``interval_s`` until ``duration_s`` passes; report changes."""
    end = None if duration_s is None else time.monotonic() + duration_s
    last: dict[str, int] = {}
    while not stopped() and (end is None or time.monotonic() < end):
        replicas = sup.step()
        if replicas != last:
            report(replicas)
            last = replicas
        time.sleep(interval_s)
