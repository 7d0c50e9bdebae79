"""``iotsched bench``: real Redis, real worker processes, a synthetic fleet; one JSON object.

The run owns one key prefix on the server (state and broker keys alike) and
deletes exactly those keys when it ends; it never flushes a database.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import uuid
from typing import Any

from ingest.synthetic import SyntheticStream
from iotsched.argtypes import non_negative_int, positive_float, positive_int, share
from iotsched.bench_window import OfferWindow, PatternPace, WindowWatch
from iotsched.loadrun import DriveResult, drive, stderr_progress, summarize, wait_drained
from iotsched.reconcile import AcceptedLog, reconcile
from scheduler.batching import BatchingConfig
from scheduler.latency import percentile_ms
from stores.inflight import InflightLedger


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("bench", help="measure throughput and latency on real Redis and workers")
    p.add_argument("--readings", type=positive_int, default=1_000_000, help="readings to offer")
    p.add_argument("--devices", type=positive_int, default=1_000_000, help="fleet size")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0", help="Redis to use")
    p.add_argument(
        "--concurrency", type=positive_int, default=1, help="pool processes per region worker"
    )
    p.add_argument("--pool", default="prefork", choices=("prefork", "solo", "threads"))
    p.add_argument(
        "--rate-rps", type=positive_float, default=None, help="pace the producer (default: max)"
    )
    p.add_argument("--batch-readings", type=positive_int, default=5_000, help="micro-batch size")
    p.add_argument("--chunk", type=positive_int, default=20_000, help="readings per gateway chunk")
    p.add_argument(
        "--spike-share",
        type=share,
        default=1e-4,
        help="share of readings given an injected spike once devices are warm (detector warm-up)",
    )
    p.add_argument(
        "--anomaly-share",
        type=share,
        default=1e-4,
        help="share of readings that start an injected anomaly of each kind in turn, at 3-8 "
        "noise widths, judged for recall and false alerts (detection_quality)",
    )
    p.add_argument(
        "--pattern",
        help="pace by a named load pattern (steady, daily, ramp, spike, fleet_spike, bursts, "
        "beyond_capacity) at --rate-rps base over --horizon-s; --readings then follows",
    )
    p.add_argument("--horizon-s", type=positive_float, default=60.0, help="length of --pattern (s)")
    p.add_argument("--no-verify", action="store_true", help="skip re-reading every rollup")
    p.add_argument("--timeout-s", type=positive_float, default=600.0, help="give up draining after")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--json", action="store_true", help="print only the JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.readings <= 0 or args.devices <= 0 or args.concurrency <= 0:
        raise SystemExit("bench: --readings, --devices and --concurrency must be positive")
    from iotsched.redis_run import RedisRun

    progress = None if args.json else stderr_progress
    pace = None
    if args.pattern:
        if not args.rate_rps:
            raise SystemExit("bench: --pattern needs --rate-rps (the pattern's base rate)")
        pace = PatternPace.named(args.pattern, args.rate_rps, args.horizon_s, args.seed)
        args.readings = pace.readings
    prefix = f"iotsched-bench-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    batching = BatchingConfig(max_readings=args.batch_readings)
    t0 = time.time()
    with RedisRun(
        args.redis_url,
        prefix,
        args.devices,
        seed=args.seed,
        concurrency=args.concurrency,
        pool=args.pool,
        batching=batching,
    ) as run_:
        setup_s = time.time() - t0
        assert run_.registry is not None
        stream = SyntheticStream(
            run_.registry,
            seed=args.seed,
            spike_share=args.spike_share,
            anomaly_share=args.anomaly_share,
        )
        accepted = AcceptedLog()
        run_.producer.on_accepted = accepted.add
        started = time.time()
        watch = WindowWatch(run_, pace, started).start() if pace else None
        offers = None
        if pace is not None and pace.window_s is not None:
            lo, hi = pace.window_s
            offers = OfferWindow(run_, started + lo, started + hi).install(run_.producer, stream)
        result = drive(
            run_.producer, stream, args.readings, args.rate_rps, args.chunk, None, progress, pace
        )
        drained, done = wait_drained(run_.store, args.timeout_s, progress)
        # Screening of non-premium readings ranks below premium and may finish after the
        # last routine batch: wait for the in-flight ledger to empty before summarising.
        ledger = InflightLedger(run_.store.client, run_.keys)
        settle_by = time.time() + 60.0
        while ledger.size() and time.time() < settle_by:
            time.sleep(0.05)
        summary: dict[str, Any] = summarize(
            run_.store, run_.settings.tiers, result, done, verify=not args.no_verify
        )
        if not args.no_verify:
            # Exact, per device and minute: counters can disagree with the data after faults.
            exact = reconcile(
                accepted, run_.store.client, run_.keys, run_.producer.outbox.peek(1 << 30)
            )
            summary.update(lost=exact.lost, duplicated=exact.duplicated, held=exact.held)
        summary["detection_ms"] = _detection(run_)
        summary["detection_quality"] = _detection_quality(run_, stream)
        # Every routine batch and screening copy settled: none is left for the reaper.
        summary["inflight_left"] = ledger.size()
        if watch is not None:
            summary["pattern"] = args.pattern
            summary["during_disturbance"] = watch.report(offers)
        summary.update(_offered(result))
        summary["registry_lookup_ms_per_100k"] = _lookup_ms(run_.registry)
        summary["anomalies_injected"] = stream.injected
        summary.update(
            devices=args.devices,
            drained=drained,
            producer_seconds=round(result.finished_ts - result.started_ts, 3),
            setup_seconds=round(setup_s, 3),
            workers=len(run_.settings.regions),
            concurrency=args.concurrency,
            pool=args.pool,
            batch_readings=args.batch_readings,
        )
    print(json.dumps(summary, indent=None if args.json else 2))
    ok = drained and summary["lost"] == 0 and summary["duplicated"] == 0
    return 0 if ok else 1


def _offered(result: DriveResult) -> dict[str, Any]:
    """What the source offered (while it offered) and what ingest admitted (until the
    last reading was taken); ``pushed_back`` counts every hand-back (a reading handed
    back twice counts twice), ``pushed_back_readings`` each reading handed back once."""
    return {
        "offered": result.offered,
        "offered_rps": round(result.offered_rps, 1),
        "admitted_rps": round(result.admitted_rps, 1),
        "pushed_back": result.pushed_back,
        "pushed_back_readings": result.pushed_back_readings,
        "deferred_at_gateway": result.deferred,
    }


def _detection(run_: Any) -> dict[str, Any]:
    """Event time of an anomalous reading → its device alert emitted by screening."""
    from stores.detector_store import detection_histogram
    from tasks.screen import tier_alert_stage

    h = detection_histogram(run_.store.client, run_.keys)
    counters = run_.store.counters()
    by_tier = {}
    for tier in run_.settings.tiers:
        t = detection_histogram(run_.store.client, run_.keys, tier_alert_stage(tier))
        by_tier[tier] = {"p50": _round(percentile_ms(t, 50)), "p99": _round(percentile_ms(t, 99))}
    return {
        "p50": _round(percentile_ms(h, 50)),
        "p99": _round(percentile_ms(h, 99)),
        "by_tier": by_tier,
        "alerts": counters.get("device_alerts", 0),
        "screened_readings": counters.get("screened_readings", 0),
    }


def _detection_quality(run_: Any, stream: SyntheticStream) -> dict[str, Any]:
    """Recall, false alerts and TP delay of the alerts the workers emitted (recent-alerts log)."""
    from scheduler import alert_record
    from scheduler.detection_quality import judge
    from stores.detector_store import RedisDetectorStore

    store = RedisDetectorStore(run_.store.client, run_.keys)
    alerts = alert_record.decode(store.recent_alerts())
    low, high = stream.anomaly_sigma
    realistic = [a for a in stream.truth if low <= a.magnitude_sigma <= high]
    others = [a for a in stream.truth if not low <= a.magnitude_sigma <= high]
    screened = store.screen_counters()["screened_readings"]
    return judge(realistic, alerts, screened, also_explains=others)


def _lookup_ms(registry: Any, ids: int = 100_000, repeats: int = 5) -> float:
    """Median time to classify ``ids`` random device ids against the fleet snapshot."""
    import numpy as np

    rng = np.random.default_rng(0)
    sample = registry.device_id[rng.integers(0, len(registry), ids)]
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        registry.lookup(sample)
        times.append((time.perf_counter() - t0) * 1000)
    return round(float(np.median(times)), 3)


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 2)
