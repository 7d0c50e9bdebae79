"""The world of one fault run, and the faults themselves.

A private redis-server (AOF on), one real worker process per region (each its
own LocalCluster, so one can be killed and started again), and an in-process
producer with the spool outbox, memory gate and unconfirmed window that
``iotsched produce`` uses.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from bench.poison import inject_poison
from bench.redis_server import PrivateRedis
from bench.sending import bench_publisher
from bench.worker_launch import wait_workers_ready
from ingest.memory_gate import MemoryGate
from ingest.outbox import SpoolOutbox
from ingest.producer import Producer
from ingest.unconfirmed import UnconfirmedWindow, redis_run_id
from scheduler.batching import BatchingConfig
from scheduler.model import QUEUE_ORDER, queue_name
from scheduler.registry import generate_registry
from scheduler.settings import Settings
from stores.inflight import InflightLedger
from stores.keys import Keys
from stores.queue_depth import queue_depths
from stores.redis_state import RedisStateStore
from tasks.app import broker_app
from workers.cluster import LocalCluster, _children
from workers.heartbeat import WEDGED_EXIT_CODE

FAULTS = (
    "worker_kill_storm",
    "redis_kill_everysec",
    "redis_kill_always",
    "redis_stop",
    "redis_restart",
    "maxmemory",
    "poison",
    "wedged_child",
)
#: Workers recover fast: a killed worker's messages come back within seconds.
WORKER_ENV = {
    "IOTSCHED_VISIBILITY_TIMEOUT_S": "5",
    "IOTSCHED_UNACKED_RESTORE_INTERVAL_S": "1",
    "IOTSCHED_SCREENING": "0",
}
EVERYSEC_NOTE = (
    "appendfsync everysec: Redis may lose up to ~1 s of acknowledged writes when killed; "
    "the producer keeps published batches until a run_id check confirms them on disk "
    "and hands them over again after a restart, so none is lost"
)


class FaultRun:
    """One fault's world: Redis, workers per region, a producer with a spool outbox."""

    def __init__(self, appendfsync: str, devices: int, seed: int) -> None:
        self.redis = PrivateRedis(appendfsync)
        self.redis.start()
        self.keys = Keys(f"faults-{uuid.uuid4().hex[:6]}")
        self.client = self.redis.client()
        self.store = RedisStateStore(self.client, self.keys)
        self.registry = generate_registry(devices, seed=seed)
        self.store.save_registry(self.registry)
        self.settings = Settings(redis_url=self.redis.url, key_prefix=self.keys.prefix)
        self.clusters = {
            r: LocalCluster(self.redis.url, self.keys.prefix, [r], env_extra=dict(WORKER_ENV))
            for r in self.settings.regions
        }
        for cluster in self.clusters.values():
            cluster.start()
        self.app = broker_app(self.redis.url, self.keys)
        self.app.conf.broker_transport_options = {
            **self.app.conf.broker_transport_options,
            "socket_timeout": 5,
            "socket_connect_timeout": 2,
        }
        self.outbox_dir = tempfile.mkdtemp(prefix="iotsched-outbox-")
        self.outbox = SpoolOutbox(self.outbox_dir)
        reg = self.registry
        self.producer = Producer(
            lambda: reg,
            bench_publisher(
                self.app, screening=False, ledger=InflightLedger(self.client, self.keys)
            ),
            self.store,
            batching=BatchingConfig(max_readings=1_000),
            outbox=self.outbox,
            retry_s=0.5,
            pause_gate=MemoryGate(self.client),
            unconfirmed=UnconfirmedWindow(redis_run_id(self.client)),
        )
        self.kills = 0
        self.self_restarts = 0
        self.stream_done = threading.Event()
        self.wait_workers()

    def wait_workers(self, timeout_s: float = 60.0) -> None:
        wait_workers_ready(self.app, self.workers_started(), timeout_s)

    def workers_started(self) -> int:
        """Worker processes started: each region's data worker and its premium lane."""
        return sum(c.node_count for c in self.clusters.values())

    def workers_alive(self) -> int:
        return sum(p.poll() is None for c in self.clusters.values() for p in c.procs.values())

    def supervise(self) -> None:
        """What a restart policy does (compose ``restart``): a worker that exited because it
        found its pool wedged is started again. Nothing else is ever restarted here."""
        for region, cluster in self.clusters.items():
            name = f"data-{region}"
            proc = cluster.procs.get(name)
            if proc is not None and proc.poll() == WEDGED_EXIT_CODE:
                cluster.restart(name)
                self.self_restarts += 1

    def close(self) -> None:
        for cluster in self.clusters.values():
            cluster.stop(timeout_s=10)
        self.outbox.close()
        self.app.close()
        self.redis.close()
        shutil.rmtree(self.outbox_dir, ignore_errors=True)


def waiting_messages(world: FaultRun) -> dict[str, int]:
    """Where unaccounted readings may still sit: broker queues and kombu's unacked hash."""
    queues = [queue_name(r, c.value) for r in world.settings.regions for c in QUEUE_ORDER]
    depths = {q: d for q, d in queue_depths(world.client, world.keys, queues).items() if d}
    depths["unacked"] = int(world.client.hlen(f"{world.keys.broker_prefix}unacked"))
    return depths


# --- the faults -------------------------------------------------------------------------


def _kill_storm(
    world: FaultRun, outage_s: float, stop: threading.Event, extra: dict[str, Any]
) -> None:
    """Every 1-3 s until the stream ends, SIGKILL a region's worker (main process and pool
    children) and start it again, as a crash-looping host would."""
    rng = random.Random(0)
    while not stop.wait(rng.uniform(1.0, 3.0)) and not world.stream_done.is_set():
        region = rng.choice(sorted(world.clusters))
        cluster = world.clusters[region]
        cluster.kill(f"data-{region}")
        world.kills += 1
        time.sleep(0.3)
        cluster.restart(f"data-{region}")
    extra["worker_kills"] = world.kills


def _redis_kill(
    world: FaultRun, outage_s: float, stop: threading.Event, extra: dict[str, Any]
) -> None:
    world.redis.kill()
    time.sleep(3.0)
    world.redis.start()
    extra["redis_down_s"] = 3.0


def _redis_stop(
    world: FaultRun, outage_s: float, stop: threading.Event, extra: dict[str, Any]
) -> None:
    world.redis.signal(signal.SIGSTOP)
    time.sleep(outage_s)
    world.redis.signal(signal.SIGCONT)
    extra["redis_stopped_s"] = outage_s


def _redis_restart(
    world: FaultRun, outage_s: float, stop: threading.Event, extra: dict[str, Any]
) -> None:
    world.redis.shutdown()
    time.sleep(outage_s)
    world.redis.start()
    extra["redis_down_s"] = outage_s


def _maxmemory(
    world: FaultRun, outage_s: float, stop: threading.Event, extra: dict[str, Any]
) -> None:
    admin = world.redis.client()
    used = int(admin.info("memory")["used_memory"])
    # Just above what is used: ingest pauses at once, and workers' writes meet the limit.
    limit = used + 512 * 1024
    admin.config_set("maxmemory", limit)
    time.sleep(outage_s)
    extra["maxmemory_bytes"] = limit
    extra["peak_used_share"] = round(int(admin.info("memory")["used_memory_peak"]) / limit, 3)
    admin.config_set("maxmemory", 0)


def _poison(world: FaultRun, outage_s: float, stop: threading.Event, extra: dict[str, Any]) -> None:
    extra["poison_injected"] = inject_poison(world.app, world.registry)


def _wedged_child(
    world: FaultRun, outage_s: float, stop: threading.Event, extra: dict[str, Any]
) -> None:
    """SIGSTOP one region's pool process: it holds its batch until Celery's hard time limit
    kills it; the batch is then retried, and the worker takes work again by itself."""
    region = sorted(world.clusters)[0]
    proc = world.clusters[region].procs[f"data-{region}"]
    children = _children(proc.pid)
    if children:
        os.kill(children[0], signal.SIGSTOP)
    extra["wedged_pid"] = children[0] if children else None


FAULT_ACTIONS: dict[str, Callable[[FaultRun, float, threading.Event, dict[str, Any]], None]] = {
    "worker_kill_storm": _kill_storm,
    "redis_kill_everysec": _redis_kill,
    "redis_kill_always": _redis_kill,
    "redis_stop": _redis_stop,
    "redis_restart": _redis_restart,
    "maxmemory": _maxmemory,
    "poison": _poison,
    "wedged_child": _wedged_child,
}
