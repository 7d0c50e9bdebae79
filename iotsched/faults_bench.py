"""``iotsched faults-bench``: each fault against a recorded stream, reconciled exactly.

Per fault: a private redis-server (AOF on), one real worker process per
region, and an in-process producer (spool outbox, memory gate, unconfirmed
window) offering a synthetic stream at ``--rate-rps`` for ``--seconds``. The
fault strikes a third of the way in. Then the run waits until every accepted
reading is accounted for and reconciles per device and minute
(iotsched/reconcile.py): each accepted reading in a rollup once, in the
dead-letter stream with its reason, or still held in the outbox. One JSON
line per fault.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np

from ingest.celery_publisher import CeleryPublisher
from ingest.memory_gate import MemoryGate
from ingest.outbox import SpoolOutbox
from ingest.producer import Producer
from ingest.synthetic import SyntheticStream
from ingest.unconfirmed import UnconfirmedWindow, redis_run_id
from iotsched.poison import inject_poison, is_poison
from iotsched.private_redis import PrivateRedis
from iotsched.reconcile import AcceptedLog, reconcile
from scheduler.batching import BatchingConfig
from scheduler.registry import generate_registry
from scheduler.settings import Settings
from stores.inflight import InflightLedger
from stores.keys import Keys
from stores.protocols import processed_readings
from stores.redis_state import RedisStateStore
from tasks.app import broker_app
from workers.cluster import LocalCluster, _children

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


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("faults-bench", help="faults against a recorded stream, reconciled exactly")
    p.add_argument("--faults", default=",".join(FAULTS), help=f"comma-separated: {FAULTS}")
    p.add_argument("--rate-rps", type=float, default=5_000, help="readings offered per second")
    p.add_argument("--seconds", type=float, default=30.0, help="stream length per fault")
    p.add_argument("--outage-s", type=float, default=20.0, help="SIGSTOP / restart / OOM length")
    p.add_argument("--devices", type=int, default=20_000)
    p.add_argument("--drain-timeout-s", type=float, default=180.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print only the JSON lines")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    faults = [f for f in args.faults.split(",") if f]
    unknown = sorted(set(faults) - set(FAULTS))
    if unknown:
        raise SystemExit(f"faults-bench: unknown faults {unknown}; choose from {FAULTS}")
    if args.rate_rps <= 0 or args.seconds <= 0 or args.outage_s < 0:
        raise SystemExit("faults-bench: --rate-rps and --seconds must be positive")
    ok = True
    for fault in faults:
        report = run_fault(
            fault,
            args.rate_rps,
            args.seconds,
            args.outage_s,
            args.devices,
            args.drain_timeout_s,
            args.seed,
            quiet=args.json,
        )
        print(json.dumps(report), flush=True)
        ok = ok and report["lost"] == 0 and report["duplicated"] == 0 and report["drained"]
    return 0 if ok else 1


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
            CeleryPublisher(
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
        self.stream_done = threading.Event()
        self.wait_workers()

    def wait_workers(self, timeout_s: float = 60.0) -> None:
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if len(self.app.control.ping(timeout=0.5) or []) >= len(self.clusters):
                return

    def workers_alive(self) -> int:
        return sum(p.poll() is None for c in self.clusters.values() for p in c.procs.values())

    def close(self) -> None:
        for cluster in self.clusters.values():
            cluster.stop(timeout_s=10)
        self.outbox.close()
        self.app.close()
        self.redis.close()
        import shutil

        shutil.rmtree(self.outbox_dir, ignore_errors=True)


def run_fault(
    fault: str,
    rate_rps: float,
    seconds: float,
    outage_s: float,
    devices: int,
    drain_timeout_s: float,
    seed: int,
    quiet: bool = True,
) -> dict[str, Any]:
    say = (lambda _line: None) if quiet else (lambda line: print(line, file=sys.stderr))
    world = FaultRun("always" if fault == "redis_kill_always" else "everysec", devices, seed)
    stop = threading.Event()
    extra: dict[str, Any] = {}
    try:
        strike = FAULT_ACTIONS[fault]
        thread = threading.Thread(
            target=_after, args=(seconds / 3, stop, lambda: strike(world, outage_s, stop, extra))
        )
        t0 = time.time()
        thread.start()
        log = AcceptedLog()
        offered, pushed_back = offer_stream(world, log, rate_rps, seconds, drain_timeout_s, say)
        world.stream_done.set()
        drained = wait_accounted(world, log, drain_timeout_s, say)
        stop.set()
        thread.join()
        if fault in ("wedged_child", "maxmemory"):
            drained = wait_accounted(world, log, drain_timeout_s, say)
        result = reconcile(
            log, world.client, world.keys, world.outbox.peek(len(world.outbox)), is_poison
        )
        report: dict[str, Any] = {
            "fault": fault,
            "offered": offered,
            "accepted": result.accepted,
            "processed": result.processed,
            "dead_lettered": result.dead_lettered,
            "held": result.held,
            "lost": result.lost,
            "duplicated": result.duplicated,
            "pushed_back": pushed_back,
            "drained": drained,
            "seconds": round(time.time() - t0, 1),
            "workers_alive": world.workers_alive(),
            "workers_restarted_by_hand": 0,
            "inflight_left": InflightLedger(world.client, world.keys).size(),
        }
        if world.producer.unconfirmed is not None:
            report["redis_restarts_seen"] = world.producer.unconfirmed.restarts_seen
        if not drained:
            report["waiting_messages"] = _waiting(world)
        if result.dead_letter_reasons:
            report["dead_letter_reasons"] = result.dead_letter_reasons
        if fault == "poison":
            report["poison_dead_lettered_readings"] = result.excluded
            report["poison_dead_letters"] = result.excluded_letters
        if fault == "redis_kill_everysec":
            report["note"] = EVERYSEC_NOTE
        report.update(extra)
        return report
    finally:
        stop.set()
        world.close()


def _waiting(world: FaultRun) -> dict[str, int]:
    """Where unaccounted readings may still sit: broker queues and kombu's unacked hash."""
    from scheduler.model import QUEUE_ORDER, queue_name
    from stores.queue_depth import queue_depths

    queues = [queue_name(r, c.value) for r in world.settings.regions for c in QUEUE_ORDER]
    depths = {q: d for q, d in queue_depths(world.client, world.keys, queues).items() if d}
    depths["unacked"] = int(world.client.hlen(f"{world.keys.broker_prefix}unacked"))
    return depths


def _after(delay_s: float, stop: threading.Event, action: Callable[[], None]) -> None:
    if not stop.wait(delay_s):
        action()


def offer_stream(
    world: FaultRun,
    log: AcceptedLog,
    rate_rps: float,
    seconds: float,
    hold_timeout_s: float,
    say: Callable[[str], None],
) -> tuple[int, int]:
    """Offer ``rate_rps`` for ``seconds`` as a gateway would: pushed-back readings are held
    and offered again. Returns (offered, pushed back)."""
    stream = SyntheticStream(world.registry, seed=0)
    producer = world.producer
    started = time.time()
    offered = pushed = 0
    held: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    last_say = started
    while True:
        now = time.time()
        elapsed = now - started
        due = min(int(elapsed * rate_rps), int(seconds * rate_rps)) - offered
        parts = [held] if held is not None else []
        if due > 0:
            parts.append(stream.chunk(due, now))
            offered += due
        held = None
        if parts:
            ids, ts, values = (np.concatenate([p[i] for p in parts]) for i in range(3))
            res = producer.ingest_columns(ids, ts, values, now_ts=now)
            keep = np.ones(ids.size, dtype=bool)
            keep[res.pushed_back_index] = False
            log.add(ids[keep], ts[keep])
            if res.pushed_back:
                pushed += res.pushed_back
                i = res.pushed_back_index
                held = (ids[i], ts[i], values[i])
        producer.poll(now)
        if now - last_say >= 1.0:
            last_say = now
            say(f"offered {offered:,} accepted {log.readings:,} outbox {producer.outbox_held:,}")
        if elapsed >= seconds and held is None:
            break
        if elapsed >= seconds + hold_timeout_s:
            break
        time.sleep(0.01)
    producer.flush()
    return offered, pushed


def wait_accounted(
    world: FaultRun, log: AcceptedLog, timeout_s: float, say: Callable[[str], None]
) -> bool:
    """Until every accepted reading is processed, dead-lettered or held (by the counters,
    which move with the data they count), then confirmed by the exact reconciliation."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        world.producer.poll()
        try:
            c = world.store.counters()
        except Exception as exc:
            say(f"waiting for Redis: {exc!r}")
            time.sleep(1.0)
            continue
        done = processed_readings(c) + c.get("dead_lettered", 0) + world.producer.outbox_held
        if done >= log.readings:
            r = reconcile(
                log, world.client, world.keys, world.outbox.peek(len(world.outbox)), is_poison
            )
            if r.lost == 0:
                return True
        say(f"accounted {done:,}/{log.readings:,}")
        time.sleep(1.0)
    return False


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
        cluster.start()
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
