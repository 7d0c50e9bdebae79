"""``iotsched produce``: a producer against the configured Redis and broker.

Reads JSON readings (one per line) from stdin, or offers a synthetic stream
from the stored registry at a steady rate. Prints progress once a second.

It rides out a Redis restart or outage: batches the broker does not take wait
in a spool on disk (``--outbox-dir``), replayed in order when Redis is back
(also by the next run, if this one is stopped first); past the spool's bound,
and while Redis is near ``maxmemory``, readings are held and offered again.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from bench.loadrun import drive, offer_singles, stderr_progress
from ingest.memory_gate import MemoryGate
from ingest.outbox import SpoolOutbox
from ingest.producer import OUTBOX_MAX_READINGS, Producer
from ingest.synthetic import SyntheticStream
from ingest.unconfirmed import UnconfirmedWindow, redis_run_id
from iotsched.argtypes import non_negative_int, positive_float, positive_int
from iotsched.producer_wiring import wire_producer
from scheduler.settings import Settings
from stores.connection import connect
from tasks.app import app


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("produce", help="ingest readings from stdin or a synthetic stream")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--stdin", action="store_true", help="JSON readings, one per line")
    src.add_argument("--rate-rps", type=positive_float, default=10_000, help="synthetic readings/s")
    p.add_argument("--seconds", type=positive_float, default=60.0, help="synthetic stream duration")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument(
        "--outbox-dir",
        default=os.path.join(".iotsched", "outbox"),
        help="spool for batches Redis did not take yet (replayed in order, also after a restart)",
    )
    p.add_argument(
        "--outbox-max-readings",
        type=positive_int,
        default=OUTBOX_MAX_READINGS,
        help="past this many readings spooled, ingest pushes back",
    )
    p.add_argument(
        "--drain-timeout-s",
        type=positive_float,
        default=300.0,
        help="at the end, wait this long for the spool to empty before exiting",
    )
    p.set_defaults(func=run)


#: Socket timeouts (s): a stopped Redis costs the producer a bounded wait, not a hang.
SOCKET_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 2.0


def run(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    client = connect(
        settings.redis_url,
        socket_timeout=SOCKET_TIMEOUT_S,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
    )
    app.conf.broker_transport_options = {
        **app.conf.broker_transport_options,
        "socket_timeout": SOCKET_TIMEOUT_S,
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
    }
    wiring = wire_producer(settings, app, client)
    registry = wiring.runtime.registry
    outbox = SpoolOutbox(args.outbox_dir)
    if len(outbox):
        print(f"outbox: {outbox.held_readings:,} readings from an earlier run to replay")
    producer = wiring.producer(
        f"produce-{int(time.time())}",
        outbox=outbox,
        outbox_max_readings=args.outbox_max_readings,
        pause_gate=MemoryGate(client),
        # Redis killed within a second of a publish (appendfsync everysec) loses it:
        # keep each batch until Redis has it on disk, hand it over again after a restart.
        unconfirmed=UnconfirmedWindow(redis_run_id(client)),
    )
    try:
        if args.stdin:
            return _from_stdin(producer)
        stream = SyntheticStream(registry.get(), n_metrics=len(settings.metrics), seed=args.seed)
        res = drive(
            producer,
            stream,
            int(args.rate_rps * args.seconds),
            args.rate_rps,
            2_000,
            None,
            stderr_progress,
            hold_timeout_s=args.drain_timeout_s,
        )
        print(
            f"offered {res.offered:,}, accepted {res.accepted:,}, rejected {res.rejected:,}, "
            f"pushed back (and offered again) {res.pushed_back:,}"
        )
        code = _drain_outbox(producer, args.drain_timeout_s)
        if res.unadmitted:
            print(
                f"iotsched produce: {res.unadmitted:,} readings never admitted in "
                f"{args.drain_timeout_s:g} s (is a worker draining their region?); not accepted",
                file=sys.stderr,
            )
            return code or 3
        return code
    finally:
        wiring.close()
        outbox.close()


def _drain_outbox(producer: Producer, timeout_s: float) -> int:
    """Wait for the broker to take what the outbox holds; 0 when it is empty."""
    deadline = time.monotonic() + timeout_s
    while producer.outbox_held and time.monotonic() < deadline:
        stderr_progress(f"outbox: {producer.outbox_held:,} readings waiting for Redis")
        time.sleep(1.0)
        producer.flush()
    if producer.outbox_held:
        print(f"outbox: {producer.outbox_held:,} readings still spooled; the next run replays them")
        return 3
    return 0


def _from_stdin(producer: Producer, chunk: int = 1_000) -> int:
    lines: list[bytes] = []
    accepted = rejected = skipped = 0
    for line in sys.stdin.buffer:
        if line.strip():
            lines.append(line.strip())
        else:
            skipped += 1
        if len(lines) >= chunk:
            a, r = offer_singles(producer, lines)
            accepted, rejected, lines = accepted + a, rejected + r, []
    if lines:
        a, r = offer_singles(producer, lines)
        accepted, rejected = accepted + a, rejected + r
    producer.flush()
    if skipped:
        # Counted, so offered lines reconcile with accepted + dead-lettered + skipped.
        producer.store.incr_counters({"skipped_empty_lines": skipped})
    print(f"accepted {accepted:,}, rejected {rejected:,}, skipped {skipped:,} empty lines")
    return _drain_outbox(producer, 300.0)
