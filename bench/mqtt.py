"""The MQTT bench behind ``iotsched mqtt-bench``: devices → Mosquitto → bridge → workers.

Simulated devices (or gateways, ``--per-message 100``) publish through a real broker at
QoS 1, premium devices to their premium topics on connections of their own (gateways
split each batch: its premium devices' readings to the gateway's premium topic), or with
``--plain-topics`` every device to its plain topic; ``mqtt-bridge`` processes (one
shared-subscription group) ingest; one real worker per region processes. Reported:
readings/s from first publish to all processed, premium p99 from device publish to
processed, and lost = broker-acknowledged readings not processed and not dead-lettered
(processed is read back from the rollups). The publishers run at a lower CPU priority
(``--publisher-nice``, 10): the fleet they stand for is not on this machine.

The run owns a key prefix on Redis and a topic prefix on the broker, and deletes its
keys at the end.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import time
import uuid
from typing import Any

import numpy as np
import numpy.typing as npt

from bench.loadrun import (
    DriveResult,
    stage_percentiles,
    stderr_progress,
    summarize,
    wait_drained,
)
from bench.mqtt_devices import PublishPlan, publish_share
from scheduler.routine import STARTED_STAGE

#: Ingest that has not moved for this long after publishing ended will not move again.
QUIET_S = 10.0


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Run the bench ``args`` describe (``iotsched mqtt-bench``'s options); its JSON object."""
    from bench.redis_run import RedisRun

    progress = None if args.json else stderr_progress
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:6]}"
    prefix, root = f"iotsched-mqttbench-{tag}", f"mqttbench-{tag}"
    with RedisRun(args.redis_url, prefix, args.devices, seed=args.seed) as run_:
        assert run_.registry is not None
        bridges = [_start_bridge(args, prefix, root, i) for i in range(args.bridges)]
        try:
            # CPU is counted from here, every process started and idle: the bridges' and
            # workers' start-up (a second or more each) is not what ingest costs.
            workers = [p.pid for p in run_.cluster.procs.values()]
            cpu_before = _cpu_split(bridges, workers)
            published, readings, started, finished, publishers_cpu_s = _publish(
                args, run_, root, progress
            )
            drained, done = _wait_ingested_then_drained(run_, readings, args.timeout_s, progress)
            cpu_s = _cpu_split(bridges, workers, publishers_cpu_s) - cpu_before
            result = DriveResult(readings, readings, 0, started, finished)
            summary: dict[str, Any] = summarize(run_.store, run_.settings.tiers, result, done)
            started_ms = stage_percentiles(run_.store, STARTED_STAGE, run_.settings.tiers)
            counters = run_.store.counters()
            pushed_back = counters.get("pushed_back", 0)
            batches = {t: counters.get(f"batches:{t}", 0) for t in run_.settings.tiers}
        finally:
            for b in bridges:
                b.terminate()
            for b in bridges:
                b.wait(30)
    seconds = max(done - started, 1e-9)
    event = summary["event_latency_ms"]
    out = {
        "mode": "single" if args.per_message == 1 else f"gateway x{args.per_message}",
        "messages": published,
        "readings": readings,
        "seconds": round(seconds, 3),
        "messages_per_s": round(published / seconds, 1),
        "readings_per_s": round(readings / seconds, 1),
        "publish_seconds": round(finished - started, 3),
        # Spawning and connecting the publishers, before the first publish (not timed).
        "publisher_startup_s": round(args.startup_s, 3),
        "premium_p99_ms": event["premium"]["p99"],
        "latency_ms": event,
        # From when the bridge first offered a reading to ingest to processed: the rest of
        # latency_ms was spent before the bridge (publisher, broker, the bridge's inbox).
        "offered_latency_ms": summary["latency_ms"],
        # From the bridge's first offer to the start of the task processing the reading:
        # the rest of offered_latency_ms is the task itself.
        "started_latency_ms": started_ms,
        # Readings ingest pushed back (admission control), counted at each offer.
        "pushed_back": pushed_back,
        # Routine tasks per tier: each pays a task's fixed cost (fetch, claim, commit,
        # ack) on top of its readings, so readings per batch is what that cost is shared by.
        "routine_batches": batches,
        "processed": summary["processed"],
        "dead_lettered": summary["dead_lettered"],
        "lost": max(0, readings - summary["processed"] - summary["dead_lettered"]),
        "duplicated": max(0, summary["processed"] - readings),
        "drained": drained,
        # CPU the bridges spent (Linux /proc) from the first publish to drained, per
        # reading: what ingest over MQTT costs, whatever else shares the machine.
        "bridge_cpu_us_per_reading": _per_reading(cpu_s[0], readings),
        # Where the machine's CPU went over the same time, per reading: the bridges, the
        # workers (with their pool processes), the publishers (the simulated fleet), and
        # the whole machine (/proc/stat); what is left of it is mostly the broker and Redis.
        "cpu_us_per_reading": {
            name: _per_reading(c, readings)
            for name, c in zip(CPU_PARTS, cpu_s.tolist(), strict=True)
        },
        "publishers": args.publishers,
        "publisher_nice": args.publisher_nice,
        "bridges": args.bridges,
        "receive_maximum": args.receive_maximum,
        "devices": args.devices,
        "rate_mps": args.rate_mps,
        "premium_topics": not args.plain_topics,
    }
    return out


def _start_bridge(
    args: argparse.Namespace, prefix: str, root: str, i: int
) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable, "-m", "iotsched.cli", "mqtt-bridge",
        "--broker", args.broker,
        "--topic", f"{root}/devices/+/telemetry",
        "--topic", f"{root}/gateways/+/telemetry",
        "--group", root,
        "--client-id", f"{root}-bridge-{i}",
        "--session-expiry-s", "0",
        "--receive-maximum", str(args.receive_maximum),
        "--redis-url", args.redis_url,
        "--prefix", prefix,
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    deadline = time.time() + 60
    for line in proc.stdout:  # the bridge says "subscribed" once the broker confirmed it
        if line.startswith(b"subscribed") or time.time() > deadline:
            break
    return proc


def _publish(
    args: argparse.Namespace, run_: Any, root: str, progress: Any
) -> tuple[int, int, float, float, float]:
    """(messages, readings) the broker acknowledged, when the first publish started and
    the last ended, and the CPU seconds the publishers spent publishing."""
    ids = [int(d) for d in run_.registry.device_id]
    tiers = run_.registry.tier.tolist()
    premium_ids = [d for d, t in zip(ids, tiers, strict=True) if t == 0 and not args.plain_topics]
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    share = args.messages // args.publishers
    plans = [
        PublishPlan(
            broker_url=args.broker,
            topic_root=root,
            device_ids=ids,
            messages=share + (args.messages % args.publishers if i == 0 else 0),
            per_message=args.per_message,
            premium_ids=premium_ids,
            rate_mps=args.rate_mps / args.publishers if args.rate_mps else None,
            seed=args.seed + i,
            client_id=f"{root}-pub-{i}",
            nice=args.publisher_nice,
        )
        for i in range(args.publishers)
    ]
    # Publishers start together once every one is connected and its readings drawn: the
    # rate runs from the first publish, not from the simulator's start-up (about a second
    # and a half for two spawned processes on the shared machine).
    start = ctx.Barrier(args.publishers + 1)
    procs = [ctx.Process(target=publish_share, args=(p, results, start)) for p in plans]
    spawned = time.time()
    for p in procs:
        p.start()
    start.wait(timeout=args.timeout_s)
    started = time.time()
    args.startup_s = started - spawned
    got = [results.get(timeout=args.timeout_s) for _ in procs]
    for p in procs:
        p.join(30)
    finished = time.time()
    if progress:
        progress(f"published {sum(g[0] for g in got):,} messages in {finished - started:.1f} s")
    published, readings = sum(g[0] for g in got), sum(g[1] for g in got)
    return published, readings, started, finished, sum(g[3] for g in got)


def _cpu_s(pid: int) -> float:
    """User and system CPU seconds of a running process (0.0 where /proc is missing)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _tree_cpu_s(pid: int) -> float:
    """CPU seconds of a running process and its children (a worker's pool processes)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            children = [int(c) for c in f.read().split()]
    except OSError:
        children = []
    return _cpu_s(pid) + sum(_tree_cpu_s(c) for c in children)


def _machine_cpu_s() -> float:
    """CPU seconds every process of the machine spent so far (0.0 where /proc is missing):
    user, nice, system, irq, softirq and steal time over every core."""
    try:
        with open("/proc/stat") as f:
            ticks = f.readline().split()[1:]
    except OSError:
        return 0.0
    busy = sum(int(ticks[i]) for i in (0, 1, 2, 5, 6, 7))
    return busy / os.sysconf("SC_CLK_TCK")


#: The parts of ``cpu_us_per_reading``, in the order ``_cpu_split`` counts them.
CPU_PARTS = ("bridges", "workers", "publishers", "machine")


def _cpu_split(
    bridges: list[subprocess.Popen[bytes]], workers: list[int], publishers_s: float = 0.0
) -> npt.NDArray[np.float64]:
    """CPU seconds so far of CPU_PARTS (the publishers' as they reported it)."""
    return np.array(
        [
            sum(_cpu_s(b.pid) for b in bridges),
            sum(_tree_cpu_s(w) for w in workers),
            publishers_s,
            _machine_cpu_s(),
        ]
    )


def _per_reading(cpu_s: float, readings: int) -> float:
    return round(cpu_s / max(readings, 1) * 1e6, 2)


def _wait_ingested_then_drained(
    run_: Any, readings: int, timeout_s: float, progress: Any
) -> tuple[bool, float]:
    deadline = time.time() + timeout_s
    while run_.store.counters().get("ingested", 0) < readings and time.time() < deadline:
        time.sleep(0.01)
    return wait_drained(run_.store, max(1.0, deadline - time.time()), progress)
