"""Anomaly workflow tasks on ``{region}.anomaly``: alerts become incidents, incidents alerts.

``iotsched.anomaly`` folds one screened batch's device alerts into the region's
incidents (``scheduler.correlation``), then notifies the alert sinks of whatever is
due, and books accelerated processing (``tasks.accelerate``) of every incident it
opened or grew, except storm incidents: a fleet-wide silence or reconnect folds into one
"ingest_gap" (seen while silent) / "mass_reconnect" (seen on return) incident per region
(``scheduler.correlation``), a group's folded silence into one storm of the group, and
their devices' routine data is not accelerated, so a storm never becomes per-device
work above premium. ``iotsched.notify`` sends the notifications a fold on the premium
lane left due (``hand_notices_on``). ``iotsched.incident_tick`` runs the correlator's
timers when no alert arrives: the group wait of a new incident, growth updates, and
resolution. One tick at a time is booked per region, for the earliest moment something
falls due.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from alerts.document import alert_document
from runtime.runtime import Runtime
from scheduler.alert import SILENCE_KIND, Alert, Silence
from scheduler.anomaly_kind import KIND_NAMES
from scheduler.correlation import Correlator, CorrelatorConfig, first_notice_wait_s
from scheduler.errors import InvalidBatch, IotschedError
from scheduler.incident import Incident, IncidentUpdate
from scheduler.latency import bucket_counts
from scheduler.registry import Registry
from scheduler.wire import ALERTS_WIRE_VERSION, ANOMALY_TASK, INCIDENT_TICK_TASK, NOTIFY_TASK
from stores.detector_store import NOTIFY_STAGE
from tasks.app import app
from tasks.base import WorkTask, dead_letter_copy, timed
from tasks.limits import work_options

#: Batch ids of dropout sweep alerts (tasks.dropout.dropout_alerts) start with this.
DROPOUT_BATCH_PREFIX = "dropout:"
UNKNOWN_GROUP = "unknown"
#: Optional float columns of an alerts payload, in ``Alert``'s field order.
EVIDENCE_COLUMNS = ("observed", "expected", "band", "score")

LOGGER = logging.getLogger(__name__)
#: Where a fold's due notifications go: ``notify`` (the sinks, now) or ``hand_notices_on``;
#: called with the fold's updates and its batch id.
Notify = Callable[[Runtime, list[IncidentUpdate], str], int]
#: Histograms of how long anomaly and incident tick tasks run (ms), beside detection's.
ANOMALY_RUN_STAGE = "run:anomaly"
TICK_RUN_STAGE = "run:incident_tick"


def decode_alerts(payload: dict[str, Any], registry: Registry) -> tuple[str, str, list[Alert]]:
    """(batch id, region, alerts) of a screening task's alerts payload."""
    try:
        if payload["v"] != ALERTS_WIRE_VERSION:
            raise InvalidBatch(f"unsupported alerts wire version {payload['v']}")
        region = str(payload["region"])
        device_id = np.frombuffer(payload["device_id"], dtype="<u8")
        ts = np.frombuffer(payload["ts"], dtype="<f8")
        kind = np.frombuffer(payload["kind"], dtype="i1")
        if not (device_id.size == ts.size == kind.size == int(payload["n"])):
            raise InvalidBatch("alert column lengths disagree with n")
        # Screening adds what it saw; a sweep's dropout alerts have no value to show.
        evidence = {
            name: np.frombuffer(payload[name], dtype="<f8")
            if name in payload
            else np.full(device_id.size, np.nan)
            for name in EVIDENCE_COLUMNS
        }
        if any(col.size != device_id.size for col in evidence.values()):
            raise InvalidBatch("alert evidence lengths disagree with n")
        batch_id = str(payload["batch_id"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidBatch(f"cannot decode alerts: {exc}") from exc
    rows = registry.lookup(device_id)
    group = np.where(rows >= 0, registry.group[np.maximum(rows, 0)], -1)
    alerts = [
        Alert(int(d), str(g) if g >= 0 else UNKNOWN_GROUP, region, float(t), KIND_NAMES[k], *seen)
        for d, g, t, k, *seen in zip(
            device_id.tolist(),
            group.tolist(),
            ts.tolist(),
            kind.tolist(),
            *(evidence[name].tolist() for name in EVIDENCE_COLUMNS),
            strict=True,
        )
    ]
    return batch_id, region, alerts


def decode_silences(payload: dict[str, Any]) -> list[Silence]:
    """The silence events a dropout sweep or screening folded (``dropout_fold.silence_entries``)."""
    try:
        return [
            Silence(
                region=str(payload["region"]),
                group=str(entry["group"]),
                devices=int(entry["devices"]),
                first_seen_ts=float(entry["first_ts"]),
                last_seen_ts=float(entry["last_ts"]),
                sample=tuple(int(d) for d in entry["sample"]),
            )
            for entry in payload.get("silences") or []
        ]
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidBatch(f"cannot decode silences: {exc}") from exc


def next_due_ts(state: dict[str, Any], config: CorrelatorConfig) -> float | None:
    """The earliest moment a timer of an open incident falls due; None with none open."""
    due: list[float] = []
    for inc in state.get("incidents", []):
        if inc["notified_ts"] is None:
            due.append(inc["opened_ts"] + first_notice_wait_s(inc["group"], inc["kinds"], config))
        elif inc["dirty"]:
            due.append(inc["notified_ts"] + config.group_interval_s)
        due.append(inc["last_alert_ts"] + config.resolve_timeout_s)
    return min(due) if due else None


@dataclass
class Folded:
    """What one fold did: notifications due, the next timer, incidents opened or grown."""

    updates: list[IncidentUpdate]
    due_ts: float | None
    #: (incident id, all its devices) of each incident this fold opened or grew.
    grown: list[tuple[str, frozenset[int]]]


def correlate(
    rt: Runtime,
    region: str,
    batch_id: str | None,
    alerts: list[Alert],
    now_ts: float,
    silences: list[Silence] | None = None,
) -> Folded | None:
    """Fold alerts and silence events (or just run the timers) into the region's state in
    one atomic update (``IncidentStore.fold``); None if folded before."""

    def step(state: dict[str, Any] | None) -> tuple[dict[str, Any], Folded]:
        config = rt.correlator
        correlator = (
            Correlator.from_state(state, config) if state is not None else Correlator(config)
        )
        before = {i.incident_id: i.device_count for i in correlator.open_incidents()}
        # A sweep's alerts are devices silent now; a screened batch's ended a silence.
        silent_now = batch_id is not None and batch_id.startswith(DROPOUT_BATCH_PREFIX)
        updates = (
            correlator.observe(alerts, now_ts, silent_now, silences or ())
            if alerts or silences
            else correlator.tick(now_ts)
        )
        grown = [
            (i.incident_id, correlator.devices(i.incident_id))
            for i in correlator.open_incidents()
            if _has_pending_work(i) and i.device_count > before.get(i.incident_id, 0)
        ]
        new_state = correlator.to_state()
        return new_state, Folded(updates, next_due_ts(new_state, config), grown)

    return rt.stores.incidents.fold(region, batch_id, step)


def _has_pending_work(incident: Incident) -> bool:
    """Whether hurrying an incident's queued readings helps: not for a storm, and not for
    devices that were silent (a silence has no backlog of its own to hurry)."""
    return incident.storm is None and {k for k, _ in incident.kinds} != {SILENCE_KIND}


def book_acceleration(rt: Runtime, region: str, folded: Folded) -> int:
    """Book accelerated processing of each grown incident, at most once per interval each.

    Not while the region's budget of work above premium is spent: the pass would only
    find that and count ``accelerate_skipped_budget``, and its delivery alone took a
    worker slot about 10 ms on a loaded machine (at 2x capacity, 77 such passes a region
    in 9 s, a tenth of the region worker's time, on top of the budget itself). Nothing
    is lost: the routine workers process those readings in order, and the incident's
    next growth books again once the budget admits."""
    if not folded.grown:
        return 0
    if not rt.stores.work_budget.admits(region, rt.clock()):
        rt.stores.state.incr_counters({"accelerate_skipped_budget": len(folded.grown)})
        return 0
    interval_s = rt.settings.accelerate_min_interval_s
    incidents = [incident for incident, _ in folded.grown]
    wanted = rt.stores.incidents.want_accelerate_many(region, incidents, interval_s)
    booked = 0
    for (incident, devices), want in zip(folded.grown, wanted, strict=True):
        if want:
            rt.publisher.send_accelerate(region, incident, np.fromiter(devices, dtype=np.uint64))
            booked += 1
    return booked


def notify(rt: Runtime, updates: list[IncidentUpdate], batch_id: str | None = None) -> int:
    """Send due notifications to every sink; one failing sink does not silence the others."""
    if not updates:
        return 0
    return emit_documents(rt, [alert_document(u) for u in updates], firing_latency_ms(updates))


def hand_notices_on(rt: Runtime, updates: list[IncidentUpdate], batch_id: str) -> int:
    """Send due notifications to the region's anomaly queue (``iotsched.notify``) instead of
    the sinks: for a fold on a worker that must not wait for them (the premium lane; a
    webhook sink down costs seconds per document). Returns the notifications handed on."""
    if not updates:
        return 0
    region = updates[0].incident.region
    payload = {
        "region": region,
        "documents": [alert_document(u) for u in updates],
        "firing_ms": firing_latency_ms(updates).tolist(),
    }
    rt.publisher.send_notices(region, batch_id, payload)
    return len(updates)


def firing_latency_ms(updates: list[IncidentUpdate]) -> np.ndarray:
    """From each first notice's incident's first anomalous reading to the notice (ms)."""
    return np.array(
        [(u.at_ts - u.incident.first_seen_ts) * 1000.0 for u in updates if u.status == "firing"]
    )


def emit_documents(rt: Runtime, documents: list[dict[str, Any]], firing_ms: np.ndarray) -> int:
    """Send notification documents to every sink, and record the first notices' latency."""
    failures = 0
    for sink in rt.sinks:
        try:
            sink.emit(documents)
        except (IotschedError, OSError) as exc:
            failures += 1
            LOGGER.error("alert sink %s failed: %s", sink.name, exc)
    rt.stores.detector.add_latency(NOTIFY_STAGE, bucket_counts(firing_ms))
    if failures:
        rt.stores.state.incr_counters({"alert_sink_failures": failures})
    return len(documents)


def handle_notices(rt: Runtime, payload: dict[str, Any]) -> int:
    """The notify task's work: a fold's notifications to the sinks (``hand_notices_on``)."""
    try:
        documents = payload["documents"]
        firing_ms = np.asarray(payload["firing_ms"], dtype=np.float64)
        if not isinstance(documents, list) or not all(isinstance(d, dict) for d in documents):
            raise TypeError("documents must be a list of objects")
        if firing_ms.ndim != 1:
            raise ValueError("firing_ms must be a list of numbers")
    except (KeyError, TypeError, ValueError) as exc:
        dead_letter_copy(rt, payload, "invalid_notices", str(exc), NOTIFY_TASK)
        settle_alerts(rt, payload)
        return 0
    sent = emit_documents(rt, documents, firing_ms)
    settle_alerts(rt, payload)
    return sent


def book_tick(rt: Runtime, region: str, due_ts: float | None, now_ts: float) -> None:
    if due_ts is not None and rt.stores.incidents.want_tick(region, due_ts, now_ts):
        rt.publisher.send_incident_tick(region, max(0.0, due_ts - now_ts))


def settle_alerts(rt: Runtime, payload: Any) -> None:
    """Drop an alerts (or notices) message's in-flight ledger entry
    (``Publisher.send_alerts``, ``Publisher.send_notices``)."""
    ledger_id = payload.get("ledger_id") if isinstance(payload, dict) else None
    if isinstance(ledger_id, str):
        rt.stores.inflight.done(ledger_id)


def handle_alerts(
    rt: Runtime, payload: dict[str, Any], now_ts: float | None = None, notify_with: Notify = notify
) -> int:
    """The anomaly task's work: returns the number of notifications sent (or handed on,
    with ``notify_with=hand_notices_on``)."""
    now_ts = rt.clock() if now_ts is None else now_ts
    try:
        batch_id, region, alerts = decode_alerts(payload, rt.registry.get())
        silences = decode_silences(payload)
    except InvalidBatch as exc:
        dead_letter_copy(rt, payload, "invalid_alerts", str(exc), ANOMALY_TASK)
        settle_alerts(rt, payload)
        return 0
    folded = correlate(rt, region, batch_id, alerts, now_ts, silences)
    # Folded now or before (a redelivery): no reaper need send these alerts again.
    settle_alerts(rt, payload)
    if folded is None:
        return 0
    sent = notify_with(rt, folded.updates, batch_id)
    book_tick(rt, region, folded.due_ts, now_ts)
    book_acceleration(rt, region, folded)
    return sent


def handle_tick(rt: Runtime, payload: dict[str, Any], now_ts: float | None = None) -> int:
    now_ts = rt.clock() if now_ts is None else now_ts
    region = str(payload["region"])
    folded = correlate(rt, region, None, [], now_ts)
    assert folded is not None  # no batch id: never skipped as a duplicate
    sent = notify(rt, folded.updates)
    book_tick(rt, region, folded.due_ts, now_ts)
    return sent


@app.task(base=WorkTask, bind=True, **work_options(ANOMALY_TASK))
def process_anomaly(self: WorkTask, payload: dict[str, Any]) -> int:
    """Returns the number of notifications sent."""
    return int(self.work(timed(ANOMALY_RUN_STAGE, handle_alerts), payload))


@app.task(base=WorkTask, bind=True, **work_options(NOTIFY_TASK))
def process_notify(self: WorkTask, payload: dict[str, Any]) -> int:
    """Returns the number of notifications sent."""
    return int(self.work(handle_notices, payload))


@app.task(base=WorkTask, bind=True, **work_options(INCIDENT_TICK_TASK))
def process_incident_tick(self: WorkTask, payload: dict[str, Any]) -> int:
    """Returns the number of notifications sent."""
    return int(self.work(timed(TICK_RUN_STAGE, handle_tick), payload))
