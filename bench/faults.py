"""Behind ``iotsched faults-bench``: each fault against a recorded stream, reconciled exactly.

Per fault: a private redis-server (AOF on), one real worker process per
region, and an in-process producer (spool outbox, memory gate, unconfirmed
window) offering a synthetic stream at ``--rate-rps`` for ``--seconds``. The
fault strikes a third of the way in. Then the run waits until every accepted
reading is accounted for and reconciles per device and minute
(bench/reconcile.py): each accepted reading in a rollup once, in the
dead-letter stream with its reason, or still held in the outbox. One JSON
line per fault.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from bench.fault_world import (
    EVERYSEC_NOTE,
    FAULT_ACTIONS,
    FaultRun,
    waiting_messages,
)
from bench.poison import is_poison
from bench.reconcile import AcceptedLog, reconcile
from ingest.synthetic import SyntheticStream
from stores.inflight import InflightLedger
from stores.protocols import processed_readings


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
            "workers_started": world.workers_started(),
            "inflight_left": InflightLedger(world.client, world.keys).size(),
            "worker_self_restarts": world.self_restarts,
        }
        if world.producer.unconfirmed is not None:
            report["redis_restarts_seen"] = world.producer.unconfirmed.restarts_seen
            report["handed_over_again"] = world.producer.unconfirmed.handed_over_again
        if not drained:
            report["waiting_messages"] = waiting_messages(world)
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
                i = res.pushed_back_index
                # Readings pushed back at least once (held ones come first in ids).
                pushed += int(np.count_nonzero(i >= ids.size - max(due, 0)))
                held = (ids[i], ts[i], values[i])
        producer.poll(now)
        world.supervise()
        if now - last_say >= 1.0:
            last_say = now
            say(f"offered {offered:,} accepted {log.readings:,} outbox {producer.outbox_held:,}")
        if elapsed >= seconds and held is None:
            break
        if elapsed >= seconds + hold_timeout_s:
            break
        # Held readings are offered again every 50 ms, as a gateway would.
        time.sleep(0.05 if held is not None else 0.01)
    producer.flush()
    return offered, pushed


def wait_accounted(
    world: FaultRun, log: AcceptedLog, timeout_s: float, say: Callable[[str], None]
) -> bool:
    """Until the outbox is empty and every accepted reading is processed or dead-lettered
    (by the counters, which move with the data they count), confirmed by the exact
    reconciliation."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        world.producer.poll()
        world.supervise()
        try:
            c = world.store.counters()
        except Exception as exc:
            say(f"waiting for Redis: {exc!r}")
            time.sleep(1.0)
            continue
        held = world.producer.outbox_held
        done = processed_readings(c) + c.get("dead_lettered", 0) + held
        # Redis is back in every fault here, so the outbox must empty too.
        if done >= log.readings and held == 0:
            r = reconcile(
                log, world.client, world.keys, world.outbox.peek(len(world.outbox)), is_poison
            )
            if r.lost == 0:
                return True
        say(f"accounted {done:,}/{log.readings:,}")
        time.sleep(1.0)
    return False
