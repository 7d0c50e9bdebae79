"""Screening task: every batch through the detector, ahead of any routine queue.

Load the batch's device states (one MGET), screen them, then store the new states, the
detection latency, the counts and the alerts (the first reading of each episode) in one
atomic commit that also claims the batch id, and only then hand the alerts to
``{region}.anomaly``.

A commit applies only over the states the batch was screened from: when another batch
holding one of its devices committed in between, the batch takes its region's turn
(the region's other batches' loads and commits wait for it; other regions' do not) and
is loaded and screened again (a few times, later with a short jittered pause; then the
task is retried), so no reading's step is lost and only the screening that committed
publishes alerts. Which devices' writes a commit checks comes from the worker's registry
snapshot: when the registry was replaced under it, the load raises ``RegistryChanged``
(a commit begun before the change is refused first, as a collision), and the batch is
screened again with the registry reloaded (a few times; then the task is retried). The
commit keeps the alerts in an outbox entry until they are handed on: a worker killed in
between leaves them there, and the redelivery, finding the batch claimed, hands them on
again. Each screened batch's alerts are folded into incidents once (the fold's own claim,
``tasks.anomaly.handle_alerts``), so an alert is never lost to a crash and never counted
twice.

The screening task folds its alerts itself (``fold_alerts_here``): an anomaly message
would cost a delivery, and the wait before it, on a region worker. A copy from
``{region}.screen`` (every tier but premium) is screened by a worker that takes the
region's anomaly work anyway, ahead of everything else; traced at about 2.2x capacity
(``iotsched bench --rate-rps 550000``), the anomaly folds were about half of a region
worker's tasks, and folded here standard detection p99 was lower in six of nine
interleaved runs (median 12.2 s against 15.5 s). A premium copy
(``{region}.screen_premium``) is screened on the premium lane: it folds there too (a few
milliseconds; those messages, one per premium copy with an alert, were then the region
workers' only anomaly folds, and with their deliveries 15-18 % of a region worker's time
at 1.8-2x capacity), but the notifications the fold leaves due go to ``{region}.anomaly``
(``iotsched.notify``): premium would wait behind a sink that is slow or down. A fold
that fails here sends the alerts to ``{region}.anomaly`` instead (the anomaly task folds
them, once).
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from runtime.runtime import Runtime
from scheduler import alert_record
from scheduler.codec import decode_batch
from scheduler.detection import screen
from scheduler.detector_config import DetectorConfig
from scheduler.errors import InvalidBatch, RegistryChanged, TransientError
from scheduler.latency import bucket_counts
from scheduler.model import Batch, WorkClass
from scheduler.registry import Registry
from scheduler.return_fold import fold_alerted_returns
from scheduler.screen_cost import SCREEN_HELD_READINGS, SCREEN_HELD_US
from scheduler.wire import ALERTS_WIRE_VERSION, HELD_SCREEN_FIELD, LEDGER_REF_FIELD
from scheduler.wire import SCREEN_TASK as SCREEN_TASK  # re-exported: benches name it here
from stores.detector_store import ALERT_STAGE, DetectorStore, LoadedBatch
from tasks.anomaly import hand_notices_on, handle_alerts, notify
from tasks.app import app
from tasks.base import WorkTask, dead_letter_copy, record_service
from tasks.limits import work_options
from tasks.routine import work_class

LOGGER = logging.getLogger(__name__)

#: Receives the columnar alerts payload of one screened batch.
EmitAlerts = Callable[[dict[str, Any]], None]

#: Screenings of one batch whose commit found a device's state changed since its load,
#: before the task is retried through Celery instead.
SCREEN_ATTEMPTS = 8
#: Screenings again at once, holding the turn (``DetectorStore.take_turn``): the batch
#: that refused this one has committed, so the states are settled. A pause here only let
#: the other worker's next batch (as often as not over the same devices) load first and
#: win again: with a pause from the first retry and no turn,
#: ``bench/screen_contention.py`` ran out of five attempts.
IMMEDIATE_ATTEMPTS = 3
#: Upper bound of the pause before screening again past those, per attempt made: workers
#: still colliding then draw different pauses, so they do not collide again in step.
CONTENDED_PAUSE_S = 0.005
#: Screenings of one batch begun with the registry snapshot in hand or one reloaded after
#: it changed under them (``RegistryChanged``), before the task is retried through Celery
#: instead. A registry is replaced rarely: one reload is nearly always enough.
REGISTRY_ATTEMPTS = 3


class StatesContended(TransientError):
    """Raised when a batch's device states kept changing under its screening
    (``SCREEN_ATTEMPTS`` commits refused): Celery retries the task later."""


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
    pause: Callable[[float], None] = time.sleep,
) -> int | None:
    """Screen one batch and emit its alerts; the number of alerts, None if screened before.

    Returns from a silence many of the examined devices shared are emitted as silence
    events (``scheduler.return_fold``, by ``registry``'s groups), not as device alerts.
    ``advance_frontier`` False: the batch does not vouch for every device of its stream
    (readings screened while held back, some skipped), so the frontier stays.
    ``pause(s)`` waits between screenings of a batch whose devices changed under it."""
    devices, row = np.unique(batch.device_id, return_inverse=True)
    # Whose write counts the commit checks: any screening holding one of these devices
    # counts in its stream's (or the global) count.
    streams = () if registry is None else registry.home_streams(devices)
    version = None if registry is None else registry.version
    cfg = config or DetectorConfig()
    taken = False
    try:
        for attempt in range(SCREEN_ATTEMPTS):
            if attempt >= IMMEDIATE_ATTEMPTS:
                pause(random.uniform(0.0, CONTENDED_PAUSE_S * attempt))
            if attempt:
                # Refused: go next while other batches wait; if another refused batch
                # holds the turn, this load waits for its commit.
                taken = store.take_turn(batch.batch_id, batch.region) or taken
            loaded = store.load(
                batch.batch_id, devices, len(batch.metrics), batch.region, streams, version
            )
            if loaded.states is None:
                _send_unsent(store, loaded, emit)
                return None
            committed = _screened_and_committed(
                batch, loaded, row, store, cfg, clock, registry, advance_frontier
            )
            if committed is not None:
                taken = False  # the commit gave the turn back
                n, payload = committed
                if payload is not None:
                    emit(payload)
                    store.alerts_sent(batch.batch_id)
                return n
        raise StatesContended(
            f"batch {batch.batch_id}: device states changed {SCREEN_ATTEMPTS} times"
        )
    finally:
        if taken:
            store.give_turn(batch.batch_id, batch.region)


def _send_unsent(store: DetectorStore, loaded: LoadedBatch, emit: EmitAlerts) -> None:
    """Alerts a commit kept but perhaps never published (a crash right after it): sent
    again, as the anomaly task folds a batch's alerts once whatever copies arrive."""
    if loaded.unsent_alerts is not None:
        emit(loaded.unsent_alerts)
        store.alerts_sent(loaded.batch_id)


def _screened_and_committed(
    batch: Batch,
    loaded: LoadedBatch,
    row: np.ndarray,
    store: DetectorStore,
    cfg: DetectorConfig,
    clock: Callable[[], float],
    registry: Registry | None,
    advance_frontier: bool,
) -> tuple[int, dict[str, Any] | None] | None:
    """(alerts, their payload to emit) once committed; None when the commit was refused."""
    states = loaded.states
    assert states is not None
    devices = loaded.device_ids
    result = screen(states, row.astype(np.intp), batch.ts, batch.values, cfg)
    alert = result.alert.reshape(len(batch), -1)
    rows = np.flatnonzero(alert.any(axis=1))
    # With several metrics a reading's kind is that of its first alerting metric.
    metric = alert[rows].argmax(axis=1)
    kinds = result.kind.reshape(len(batch), -1)[rows, metric]
    keep, silences = fold_alerted_returns(batch, states, row, devices, rows, kinds, cfg, registry)
    rows, metric, kinds = rows[keep], metric[keep], kinds[keep]
    emitted_ts = clock()
    payload = None
    if rows.size or silences:
        evidence = {
            "observed": batch.values.reshape(len(batch), -1)[rows, metric],
            **{
                name: getattr(result, name).reshape(len(batch), -1)[rows, metric]
                for name in ("expected", "band", "score")
            },
        }
        payload = alerts_payload(batch, rows, kinds, emitted_ts, evidence, silences)
    latency = bucket_counts((emitted_ts - batch.ts[rows]) * 1000.0)
    record = alert_record.encode(batch.device_id[rows], batch.ts[rows], kinds, emitted_ts)
    # The newest event time this stream has screened: the dropout sweep measures
    # silence up to it, so readings merely waiting in a backlog are not silence.
    frontier = None
    if advance_frontier and len(batch):
        frontier = (batch.region, batch.tier, float(batch.ts.max()))
    # Detection latency per tier too (premium's bound is 1 s, standard's 5 s).
    committed = store.commit(
        loaded,
        result.states,
        latency,
        len(batch),
        int(rows.size),
        record,
        frontier,
        latency_stages=(tier_alert_stage(batch.tier),),
        alerts_payload=payload,
    )
    return (int(rows.size), payload) if committed else None


def counted_emit(rt: Runtime, notify_here: bool = True) -> EmitAlerts:
    """Folds alerts into the region's incidents now (``fold_alerts_here``, with
    ``notify_here``), sending them to the region's anomaly queue when that fails, and counts
    the silence events screening folded returns into (counted as sent: a batch screened
    again after a crash before its commit counts them twice)."""

    def emit(payload: dict[str, Any]) -> None:
        if not fold_alerts_here(rt, payload, notify_here):
            rt.publisher.send_alerts(payload)
        if silences := payload.get("silences"):
            folded = sum(int(s["devices"]) for s in silences)
            rt.stores.state.incr_counters(
                {"screen_silence_events": len(silences), "screen_folded_returns": folded}
            )

    return emit


def fold_alerts_here(rt: Runtime, payload: dict[str, Any], notify_here: bool = True) -> bool:
    """Fold one screened batch's alerts as the anomaly task would (incidents, ticks,
    acceleration, and the notifications due: to the sinks with ``notify_here``, else to
    the anomaly queue); False when that failed and the alerts must be sent instead.

    Any failure falls back: the anomaly task then folds the same alerts under the same
    claim, with its own retries and dead letters, so a fold that half happened here is
    neither lost nor counted twice."""
    try:
        handle_alerts(rt, payload, notify_with=notify if notify_here else hand_notices_on)
    except Exception:
        LOGGER.warning(
            "alerts of %s sent to the anomaly queue: fold failed here",
            payload.get("batch_id"),
            exc_info=True,
        )
        return False
    rt.stores.state.incr_counters({"alerts_folded_at_screening": 1})
    return True


def notifies_where_screened(tier: str) -> bool:
    """Whether a copy of ``tier`` is screened by a worker that may wait for the alert sinks:
    one taking its region's anomaly work (``{region}.screen``), not the premium lane
    (premium's copies, ``{region}.screen_premium``), where premium would wait behind them."""
    return work_class(tier) is not WorkClass.PREMIUM


def tier_alert_stage(tier: str) -> str:
    """The detection latency histogram of one tier's alerts ("mixed" for mixed copies)."""
    return f"{ALERT_STAGE}:{tier}"


def handle_screen(rt: Runtime, payload: dict[str, Any]) -> int:
    """Screen one batch copy; returns the device alerts emitted (0 when screened before)."""
    if payload.get(LEDGER_REF_FIELD) is True:
        recorded = rt.stores.inflight.payload(str(payload.get("id")))
        if recorded is None:
            # Settled: screened (or given up) by an earlier delivery of this message.
            rt.stores.state.incr_counters({"screen_ref_settled": 1})
            return 0
        payload = recorded
    try:
        batch = decode_batch(payload)
    except InvalidBatch as exc:
        dead_letter_copy(rt, payload, "invalid_batch", str(exc), SCREEN_TASK)
        return 0
    try:
        held = payload.get(HELD_SCREEN_FIELD) is True
        started = time.perf_counter()
        screened = _screened_with_registry(rt, batch, advance_frontier=not held)
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


def _screened_with_registry(rt: Runtime, batch: Batch, advance_frontier: bool) -> int | None:
    """``screen_batch`` with the process's registry snapshot, reloaded and screened again
    while the registry changes under it; the last ``RegistryChanged`` goes to Celery."""
    screen_with = functools.partial(
        screen_batch,
        batch,
        rt.stores.detector,
        counted_emit(rt, notifies_where_screened(batch.tier)),
        clock=rt.clock,
        advance_frontier=advance_frontier,
    )
    registry = rt.registry.get()
    for _ in range(REGISTRY_ATTEMPTS - 1):
        try:
            return screen_with(registry=registry)
        except RegistryChanged:
            registry = rt.registry.refresh()
    return screen_with(registry=registry)


@app.task(base=WorkTask, bind=True, **work_options(SCREEN_TASK))
def process_screen(self: WorkTask, payload: dict[str, Any]) -> int:
    """Returns the number of device alerts emitted (0 when screened before)."""
    return int(self.work(handle_screen, payload))
