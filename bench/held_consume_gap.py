"""What a prefork worker spends between two tasks when the next is a held-copy-sized
screening message, against a small one: the consume path alone.

    flock /tmp/bench.lock uv run python -m bench.held_consume_gap \
        [--messages 40] [--readings 40000] [--small-readings 100] [--hogs 0] [--trace-parent]

A private redis-server and one real worker (``bench.consume_gap_app``: the project's
celeryconfig, its Redis transport, ``--concurrency 1 --pool prefork --prefetch-multiplier
1``, as ``iotsched bench`` starts region workers) whose task does nothing. The messages
are all queued before the worker takes the first, so the worker never waits for one:
the time from a task's ``task_postrun`` to the next one's ``task_prerun`` is all
consume path (ack, BRPOP, envelope, base64, unacked hash, hand-off to the pool child,
msgpack). Each payload is ``scheduler.codec.encode_batch`` of a one-metric batch of
``--readings`` readings sharing one ingest time, as a held copy's do (wire version 2:
40,000 readings are 0.96 MB of msgpack, 1.28 MB of base64, what ``iotsched bench``
sends). ``--hogs K`` runs K busy loops beside it, as the rest of an overloaded bench
does. Prints one JSON object per size: the gap (median, mean, p90) in ms, CPU ms and
minor page faults a message of the worker's parent, its pool child and redis-server,
and with ``--trace-parent`` the parent's steps.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from bench.redis_server import private_redis
from scheduler.codec import encode_batch
from scheduler.model import Batch
from workers.cluster import PROJECT_ROOT, worker_env

QUEUE = "gapbench.screen"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def payload(readings: int) -> dict[str, Any]:
    rng = np.random.default_rng(7)
    now = time.time()
    batch = Batch(
        batch_id=uuid.uuid4().hex,
        region="gapbench",
        tier="standard",
        metrics=("value",),
        device_id=rng.integers(0, 20_000, readings).astype(np.uint64),
        ts=now - rng.random(readings),
        values=rng.normal(size=(readings, 1)),
        ingest_ts=np.full(readings, now),  # one copy time: wire version 2, as held copies
    )
    encoded = encode_batch(batch)
    encoded["held"] = True
    return encoded


def cpu_s(pid: int) -> tuple[float, int]:
    """CPU seconds (user and system) and minor page faults of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK, int(fields[7])


def read_events(trace_dir: Path) -> list[tuple[int, str, float, str]]:
    events = []
    for path in trace_dir.iterdir():
        for line in path.read_text().splitlines():
            pid, event, t, *extra = line.split(" ")
            events.append((int(pid), event, float(t), " ".join(extra)))
    events.sort(key=lambda e: e[2])
    return events


def wait_postruns(trace_dir: Path, count: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while sum(e[1] == "postrun" for e in read_events(trace_dir)) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"fewer than {count} tasks done in {timeout_s} s")
        time.sleep(0.05)


def _ms(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median_ms": round(statistics.median(ordered) * 1e3, 3),
        "mean_ms": round(statistics.fmean(ordered) * 1e3, 3),
        "p90_ms": round(ordered[int(0.9 * (len(ordered) - 1))] * 1e3, 3),
    }


#: The parent's steps between two tasks, each (name, from event, to event).
STEPS = (
    ("result_to_ack", "postrun", "ack_start"),
    ("ack", "ack_start", "ack_end"),
    ("ack_to_brpop_send", "ack_end", "brpop_send_start"),
    ("brpop_wait", "brpop_send_end", "brpop_read_start"),
    ("brpop_reply_parse", "brpop_read_start", "json_start"),
    ("envelope_json", "json_start", "json_end"),
    ("message_base64", "message_start", "message_end"),
    ("unacked_hset", "unacked_hset_start", "unacked_hset_end"),
    ("request_to_pool", "unacked_hset_end", "pool_apply_end"),
    ("pool_to_first_write", "pool_apply_end", "pipe_write"),
    ("pipe_writes", "pipe_write", "pipe_write_last"),
    ("last_write_to_prerun", "pipe_write_last", "prerun"),
)


def parent_steps(events: list[tuple[int, str, float, str]], gaps: list[tuple[float, float]]) -> Any:
    per_step: dict[str, list[float]] = {name: [] for name, _, _ in STEPS}
    writes: list[int] = []
    for start, end in gaps:
        window = [e for e in events if start <= e[2] <= end]
        first: dict[str, float] = {"postrun": start, "prerun": end}
        for _, event, t, _ in window:
            first.setdefault(event, t)
        pipe = [t for _, event, t, _ in window if event == "pipe_write"]
        writes.append(len(pipe))
        if pipe:
            first["pipe_write_last"] = pipe[-1]
        for name, a, b in STEPS:
            if a in first and b in first:
                per_step[name].append(first[b] - first[a])
    steps = {name: _ms(v)["median_ms"] for name, v in per_step.items() if v}
    return {"median_ms": steps, "pipe_writes_median": statistics.median(writes)}


def run(
    url: str,
    messages: int,
    readings: int,
    hogs: int,
    trace_parent: bool,
    worker_extra_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    # celeryconfig reads the broker and key prefix from the environment when imported.
    prefix = os.environ.setdefault("IOTSCHED_KEY_PREFIX", f"gap{uuid.uuid4().hex[:6]}")
    os.environ["IOTSCHED_REDIS_URL"] = url
    from bench.consume_gap_app import TASK
    from bench.consume_gap_app import app as gap_app

    body = payload(readings)
    with tempfile.TemporaryDirectory() as tmp:
        trace_dir = Path(tmp)
        env = worker_env(
            url,
            prefix,
            GAP_TRACE_DIR=str(trace_dir),
            GAP_TRACE_PARENT="1" if trace_parent else "0",
            **(worker_extra_env or {}),
        )
        argv = [
            sys.executable, "-m", "celery", "-A", "bench.consume_gap_app:app", "worker",
            "-Q", QUEUE, "-n", f"gap-{readings}@%h", "--concurrency", "1", "--pool", "prefork",
            "--prefetch-multiplier", "1", "--loglevel", "WARNING",
            "--without-mingle", "--without-gossip", "--without-heartbeat",
        ]  # fmt: skip
        worker = subprocess.Popen(argv, env=env, cwd=PROJECT_ROOT)
        hog_procs: list[subprocess.Popen[bytes]] = []
        try:
            small = payload(10)
            for _ in range(2):  # the child's first task imports and connects
                gap_app.send_task(TASK, args=(small,), queue=QUEUE, serializer="msgpack")
            wait_postruns(trace_dir, 2, 60)
            child = next(e[0] for e in read_events(trace_dir) if e[1] == "postrun")
            redis_pid = int(gap_app.connection().default_channel.client.info()["process_id"])
            pids = {"worker_parent": worker.pid, "pool_child": child, "redis_server": redis_pid}
            hog_procs = [
                subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(hogs)
            ]
            before = {name: cpu_s(pid) for name, pid in pids.items()}
            wall_s = time.perf_counter()
            with gap_app.producer_or_acquire() as producer, producer.batch(messages + 1):
                for _ in range(messages):
                    gap_app.send_task(
                        TASK, args=(body,), queue=QUEUE, serializer="msgpack", producer=producer
                    )
            wait_postruns(trace_dir, messages + 2, 120)
            wall_s = time.perf_counter() - wall_s
            after = {name: cpu_s(pid) for name, pid in pids.items()}
        finally:
            for hog in hog_procs:
                hog.kill()
                hog.wait()
            worker.terminate()
            worker.wait(30)
        events = read_events(trace_dir)
    task = [(e[1], e[2]) for e in events if e[0] == child and e[1] in ("prerun", "postrun")]
    runs = list(zip(task[4::2], task[5::2], strict=True))  # past the two warm-up tasks
    gaps = [(prev[1][1], nxt[0][1]) for prev, nxt in itertools.pairwise(runs)]
    figures: dict[str, Any] = {
        "readings": readings,
        "messages": messages,
        "hogs": hogs,
        "worker_env": worker_extra_env or {},
        "gap": _ms([b - a for a, b in gaps]),
        "task": _ms([post[1] - pre[1] for pre, post in runs]),
        "wall_ms_per_message": round(wall_s / messages * 1e3, 3),
        "cpu_ms_per_message": {
            k: round((after[k][0] - before[k][0]) / messages * 1e3, 3) for k in pids
        },
        "page_faults_per_message": {
            k: round((after[k][1] - before[k][1]) / messages) for k in pids
        },
    }
    if trace_parent:
        figures["parent_steps"] = parent_steps(events, gaps)
    return figures


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=40)
    p.add_argument("--readings", type=int, default=40_000)
    p.add_argument("--small-readings", type=int, default=100)
    p.add_argument("--hogs", type=int, default=0)
    p.add_argument("--trace-parent", action="store_true")
    p.add_argument("--redis-url")
    p.add_argument(
        "--worker-env", action="append", default=[], metavar="NAME=VALUE",
        help="set in the worker environment (GAP_PIPE_BYTES=1048576, MALLOC_TRIM_THRESHOLD_=...)",
    )  # fmt: skip
    args = p.parse_args()
    extra = dict(item.split("=", 1) for item in args.worker_env)
    with private_redis(args.redis_url) as url:
        for readings in (args.small_readings, args.readings):
            print(
                json.dumps(run(url, args.messages, readings, args.hogs, args.trace_parent, extra)),
                flush=True,
            )


if __name__ == "__main__":
    main()
