"""Screening task: every batch through the detector, ahead of any routine queue.

Load the batch's device states (one MGET), screen them, hand the alerts (the first
reading of each episode) to ``{region}.anomaly``, then store the new states, the
detection latency and the counts in one atomic commit that also claims the batch id.

Alerts are published before the commit: a worker killed in between leaves the batch
unclaimed, its redelivery screens the same states again and republishes the same
alerts, and the anomaly task folds each screened batch once (its own claim). So an
alert is never lost to a crash and never counted twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from runtime.runtime import Runtime
from scheduler import alert_record
from scheduler.codec import decode_batch
from scheduler.detection import screen
from scheduler.detector_config import DetectorConfig
from scheduler.errors import InvalidBatch
from scheduler.latency import bucket_counts
from scheduler.model import Batch
from scheduler.registry import Registry
from scheduler.return_fold import fold_alerted_returns
from scheduler.screen_cost import SCREEN_HELD_READINGS, SCREEN_HELD_US
from scheduler.wire import ALERTS_WIRE_VERSION, HELD_SCREEN_FIELD
from scheduler.wire import SCREEN_TASK as SCREEN_TASK  # re-exported: benches name it here
from stores.detector_store import ALERT_STAGE, DetectorStore
from tasks.app import app
from tasks.base import WorkTask, dead_letter_copy, record_service
from tasks.limits import work_options

LOGGER = logging.getLogger(__name__)

#: Receives the columnar alerts payload of one screened batch.
EmitAlerts = Callable[[dict[str, Any]], None]


def alerts_payload(
    batch: Batch,
    rows: np.ndarray,
    kinds: np.ndarray,
    emitted_ts: float,
    evidence: dict[str, np.ndarray] | None = None,
    silences: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The alerts of one batch as compact columns (msgpack-safe).

    ``evidence`` adds float columns per alert: observed, expected, band and score;
    ``silences`` the returns folded into silence events (``silence_entries``).
    """
    columns = {
        name: np.ascontiguousarray(col, dtype="<f8").tobytes()
        for name, col in (evidence or {}).items()
    }
    return {
        **columns,
        "v": ALERTS_WIRE_VERSION,
        "batch_id": batch.batch_id,
        "region": batch.region,
        "n": int(rows.size),
        "device_id": np.ascontiguousarray(batch.device_id[rows], dtype="<u8").tobytes(),
        "ts": np.ascontiguousarray(batch.ts[rows], dtype="<f8").tobytes(),
        "kind": np.ascontiguousarray(kinds, dtype="i1").tobytes(),
        "emitted_ts": emitted_ts,
        **({"silences": silences} if silences else {}),
    }


def screen_batch(
    batch: Batch,
    store: DetectorStore,
    emit: EmitAlerts,
    config: DetectorConfig | None = None,
    clock: Callable[[], float] = time.time,
    registry: Registry | None = None,
    advance_frontier: bool = True,
) -> int | None:
    """Screen one batch and emit its alerts; the number of alerts, None if screened before.

    Returns from a silence many of the examined devices shared are emitted as silence
    events (``scheduler.return_fold``, by ``registry``'s groups), not as device alerts.
    ``advance_frontier`` False: the batch does not vouch for every device of its stream
    (readings screened while held back, some skipped), so the frontier stays."""
    devices, row = np.unique(batch.device_id, return_inverse=True)
    states = store.load(batch.batch_id, devices, len(batch.metrics))
    if states is None:
        return None
    cfg = config or DetectorConfig()
    result = screen(states, row.astype(np.intp), batch.ts, batch.values, cfg)
    alert = result.alert.reshape(len(batch), -1)
    rows = np.flatnonzero(alert.any(axis=1))
    # With several metrics a reading's kind is that of its first alerting metric.
    metric = alert[rows].argmax(axis=1)
    kinds = result.kind.reshape(len(batch), -1)[rows, metric]
    keep, silences = fold_alerted_returns(batch, states, row, devices, rows, kinds, cfg, registry)
    rows, metric, kinds = rows[keep], metric[keep], kinds[keep]
    emitted_ts = clock()
    if rows.size or silences:
        evidence = {
            "observed": batch.values.reshape(len(batch), -1)[rows, metric],
            **{
                name: getattr(result, name).reshape(len(batch), -1)[rows, metric]
                for name in ("expected", "band", "score")
            },
        }
        emit(alerts_payload(batch, rows, kinds, emitted_ts, evidence, silences))
    latency = bucket_counts((emitted_ts - batch.ts[rows]) * 1000.0)
    record = alert_record.encode(batch.device_id[rows], batch.ts[rows], kinds, emitted_ts)
    # The newest event time this stream has screened: the dropout sweep measures
    # silence up to it, so readings merely waiting in a backlog are not silence.
    frontier = None
    if advance_frontier and len(batch):
        frontier = (batch.region, batch.tier, float(batch.ts.max()))
    # Detection latency per tier too (premium's bound is 1 s, standard's 5 s).
    store.commit(
        batch.batch_id,
        devices,
        result.states,
        latency,
        len(batch),
        int(rows.size),
        record,
        frontier,
        latency_stages=(tier_alert_stage(batch.tier),),
    )
    return int(rows.size)


def counted_emit(rt: Runtime) -> EmitAlerts:
    """Sends alerts, counting the silence events screening folded returns into (counted as
    sent: a batch screened again after a crash before its commit counts them twice)."""

    def emit(payload: dict[str, Any]) -> None:
        rt.publisher.send_alerts(payload)
        if silences := payload.get("silences"):
            folded = sum(int(s["devices"]) for s in silences)
            rt.stores.state.incr_counters(
                {"screen_silence_events": len(silences), "screen_folded_returns": folded}
            )

    return emit


def tier_alert_stage(tier: str) -> str:
    """The detection latency histogram of one tier's alerts ("mixed" for mixed copies)."""
    return f"{ALERT_STAGE}:{tier}"


def handle_screen(rt: Runtime, payload: dict[str, Any]) -> int:
    """Screen one batch copy; returns the device alerts emitted (0 when screened before)."""
    try:
        batch = decode_batch(payload)
    except InvalidBatch as exc:
        dead_letter_copy(rt, payload, "invalid_batch", str(exc), SCREEN_TASK)
        return 0
    try:
        store, emit, registry = rt.stores.detector, counted_emit(rt), rt.registry.get()
        held = payload.get(HELD_SCREEN_FIELD) is True
        started = time.perf_counter()
        screened = screen_batch(
            batch, store, emit, clock=rt.clock, registry=registry, advance_frontier=not held
        )
        if held and screened is not None:
            # What a held reading costs to screen: the producer's held-screening budget
            # follows it (scheduler.screen_cost).
            record_service(rt, SCREEN_HELD_US, SCREEN_HELD_READINGS, started, len(batch))
        alerts = screened or 0
    except InvalidBatch as exc:
        dead_letter_copy(rt, payload, "invalid_batch", str(exc), SCREEN_TASK)
        alerts = 0
    rt.stores.inflight.done(batch.batch_id)
    return alerts


@app.task(base=WorkTask, bind=True, **work_options(SCREEN_TASK))
def process_screen(self: WorkTask, payload: dict[str, Any]) -> int:
    """Returns the number of device alerts emitted (0 when screened before)."""
    return int(self.work(handle_screen, payload))
