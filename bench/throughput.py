"""Throughput and latency on real Redis and real worker processes, a synthetic fleet.

Behind ``iotsched bench``. The run owns one key prefix on the server (state and broker
keys alike) and deletes exactly those keys when it ends; it never flushes a database.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from bench.loadrun import DriveResult, Progress, drive, summarize, wait_drained
from bench.reconcile import AcceptedLog, reconcile
from bench.redis_run import RedisRun
from bench.window import OfferWindow, PatternPace, WindowWatch
from ingest.synthetic import SyntheticStream
from scheduler.batching import BatchingConfig
from scheduler.latency import percentile_ms
from stores.inflight import InflightLedger

#: How long screening copies may take to settle after the last routine batch drained.
SETTLE_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class ThroughputConfig:
    redis_url: str
    readings: int
    devices: int
    concurrency: int = 1
    pool: str = "prefork"
    rate_rps: float | None = None
    batch_readings: int = 5_000
    chunk: int = 20_000
    spike_share: float = 1e-4
    anomaly_share: float = 1e-4
    #: A named load pattern paced at ``rate_rps`` over ``horizon_s``; it sets the readings.
    pattern: str | None = None
    horizon_s: float = 60.0
    verify: bool = True
    timeout_s: float = 600.0
    seed: int = 0


def run_throughput(cfg: ThroughputConfig, progress: Progress | None = None) -> dict[str, Any]:
    """Offer the readings, wait for them to drain, and summarise; the JSON of ``iotsched bench``."""
    pace = None
    readings = cfg.readings
    if cfg.pattern:
        assert cfg.rate_rps, "a pattern is paced at rate_rps"
        pace = PatternPace.named(cfg.pattern, cfg.rate_rps, cfg.horizon_s, cfg.seed)
        readings = pace.readings
    prefix = f"iotsched-bench-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    t0 = time.time()
    with RedisRun(
        cfg.redis_url,
        prefix,
        cfg.devices,
        seed=cfg.seed,
        concurrency=cfg.concurrency,
        pool=cfg.pool,
        batching=BatchingConfig(max_readings=cfg.batch_readings),
    ) as run_:
        setup_s = time.time() - t0
        assert run_.registry is not None
        stream = SyntheticStream(
            run_.registry,
            seed=cfg.seed,
            spike_share=cfg.spike_share,
            anomaly_share=cfg.anomaly_share,
        )
        accepted = AcceptedLog()
        run_.producer.on_accepted = accepted.add
        started = time.time()
        watch = WindowWatch(run_, pace, started).start() if pace else None
        offers = None
        if pace is not None and pace.window_s is not None:
            lo, hi = pace.window_s
            first_tier = run_.settings.tiers[0]
            offers = OfferWindow(run_, started + lo, started + hi, first_tier=first_tier)
            offers.install(run_.producer, stream)
        result = drive(
            run_.producer, stream, readings, cfg.rate_rps, cfg.chunk, None, progress, pace
        )
        drained, done = wait_drained(run_.store, cfg.timeout_s, progress)
        ledger = InflightLedger(run_.store.client, run_.keys)
        _settle(ledger)
        summary = _outcome(cfg, run_, result, done, accepted, stream)
        # Every routine batch and screening copy settled: none is left for the reaper.
        summary["inflight_left"] = ledger.size()
        if watch is not None:
            summary["pattern"] = cfg.pattern
            summary["during_disturbance"] = watch.report(offers)
        summary.update(_offered(result))
        # Screening's cost per held reading over routine's, as the admission gate measured
        # it from the workers' service (None: not measured, the budget kept its 1:1 prior).
        cost = run_.producer.admission.screen_cost
        ratio = None if cost is None else cost()
        summary["held_screen_cost_ratio"] = None if ratio is None else round(ratio, 3)
        summary["held_screening"] = _held_screening(run_, result)
        summary["registry_lookup_ms_per_100k"] = _lookup_ms(run_.registry)
        summary["anomalies_injected"] = stream.injected
        summary.update(
            devices=cfg.devices,
            drained=drained,
            producer_seconds=round(result.finished_ts - result.started_ts, 3),
            setup_seconds=round(setup_s, 3),
            # Worker processes: each region's data worker and its premium lane.
            workers=run_.cluster.node_count,
            premium_lane_slots=run_.cluster.lane_slots,
            concurrency=cfg.concurrency,
            pool=cfg.pool,
            batch_readings=cfg.batch_readings,
        )
    return summary


def _settle(ledger: InflightLedger) -> None:
    # Screening of non-premium readings ranks below premium and may finish after the
    # last routine batch: wait for the in-flight ledger to empty before summarising.
    settle_by = time.time() + SETTLE_TIMEOUT_S
    while ledger.size() and time.time() < settle_by:
        time.sleep(0.05)


def _outcome(
    cfg: ThroughputConfig,
    run_: RedisRun,
    result: DriveResult,
    done: float,
    accepted: AcceptedLog,
    stream: SyntheticStream,
) -> dict[str, Any]:
    """Counters, latency, exact reconciliation and detection, in the JSON's key order."""
    summary: dict[str, Any] = summarize(
        run_.store, run_.settings.tiers, result, done, verify=cfg.verify
    )
    if cfg.verify:
        # Exact, per device and minute: counters can disagree with the data after faults.
        exact = reconcile(
            accepted, run_.store.client, run_.keys, run_.producer.outbox.peek(1 << 30)
        )
        summary.update(lost=exact.lost, duplicated=exact.duplicated, held=exact.held)
    summary["detection_ms"] = _detection(run_)
    summary["detection_ms"]["by_screening"] = _by_screening(run_, stream)
    summary["detection_quality"] = _detection_quality(run_, stream)
    return summary


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


def _held_screening(run_: RedisRun, result: DriveResult) -> dict[str, Any]:
    """Where the held-screening sample ended: its share of each region's devices, the
    smallest share it had and when it first shrank (seconds into the run; None: never),
    what it earned per admitted reading, and the readings kept for devices rejoining it;
    and how long readings the gateway held waited there (from their event time) before
    it handed them to screening, the gateway's part of their detection latency."""
    screener = run_.producer.held_screener
    regions = run_.settings.regions
    wait = result.handover_wait_ms
    budget = screener.budget
    return {
        "share": {r: round(budget.share(i), 3) for i, r in enumerate(regions)},
        "share_lowest": {r: round(budget.lowest_share(i), 3) for i, r in enumerate(regions)},
        "first_shrink_s": {
            r: None
            if (ts := budget.first_shrink_ts(i)) is None
            else round(ts - result.started_ts, 2)
            for i, r in enumerate(regions)
        },
        "per_admitted": round(budget.per_admitted, 3),
        "rejoin_kept": screener.rejoin.size,
        "gateway_wait_ms": {
            "p50": _round(percentile_ms(wait, 50)),
            "p99": _round(percentile_ms(wait, 99)),
        },
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
        # Returns from a silence many devices shared, folded by screening into events
        # (scheduler.return_fold): not device alerts, so not judged as false ones.
        "silence_events": counters.get("screen_silence_events", 0),
        "folded_returns": counters.get("screen_folded_returns", 0),
    }


def _by_screening(run_: RedisRun, stream: SyntheticStream) -> dict[str, Any]:
    """Detection delay of non-premium alerts (recent-alerts log) by when their reading was
    screened: while held back (``ingest.held_screener``) or only once admitted.

    Told apart by the producer's screened marks: an alerting reading no newer than the
    newest its device sent to screening while held counts as screened while held. A
    device that left the held-screening sample and rejoined it later counts its readings
    screened at admission in between as held too, so ``while_held`` is an upper bound.
    """
    from scheduler import alert_record
    from stores.detector_store import RedisDetectorStore

    alerts = alert_record.decode(RedisDetectorStore(run_.store.client, run_.keys).recent_alerts())
    registry = stream.registry
    rows = registry.lookup(alerts["device_id"])
    later = rows >= 0
    later[later] = registry.tier[rows[later]] > 0
    ts = alerts["ts"][later]
    held = run_.producer.held_screener.marks.screened(rows[later], ts)
    return screening_split(1000.0 * (alerts["emitted_ts"][later] - ts), held)


def screening_split(
    delay_ms: npt.NDArray[np.float64], held: npt.NDArray[np.bool_]
) -> dict[str, Any]:
    """Alerts, p50 and p99 of detection delays, split by ``held`` (screened while held)."""

    def part(d: npt.NDArray[np.float64]) -> dict[str, Any]:
        if not d.size:
            return {"alerts": 0, "p50": None, "p99": None}
        p50, p99 = np.percentile(d, (50, 99), method="higher").tolist()
        return {"alerts": int(d.size), "p50": _round(p50), "p99": _round(p99)}

    return {"while_held": part(delay_ms[held]), "at_admission": part(delay_ms[~held])}


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
