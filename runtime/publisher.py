"""The one place that sends task messages: every kind of work, always the same way.

Task and queue names and serializers come from ``scheduler.wire``. Messages that carry
something found nowhere else (routine batches, their remainders, screening copies, the
alerts of a screened batch or a sweep) are recorded in the in-flight ledger before they
are sent, so a message the broker loses is published again by the reaper
(``workers.inflight_reaper``) and leaves the ledger only when its task settles it.
Timers, acceleration requests, maintenance tries and probes are derived again from
stored state (the incident store, the reservation book) by the next tick or sweep, so
they are sent directly: recording them would only have the reaper send superseded ones.

Callers outside the worker (the producer, benches) use it the same way:
``runtime.publisher.send_routine(batches)``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
from celery import Celery
from kombu.exceptions import BatchPublishError, OperationalError

from runtime.redis_transport import ride_publish_batch
from scheduler import defaults, wire
from scheduler.codec import encode_batch
from scheduler.model import Batch, WorkClass, queue_name
from stores.inflight import InflightBatch, InflightLedgerStore, RedisInflightLedger


def describe(batch: Batch) -> str:
    """What Flower shows for a batch task; Celery's own repr would walk the raw columns."""
    return f"<batch {batch.batch_id} {batch.region}/{batch.tier} n={len(batch)}>"


def encode_accelerate(
    region: str, incident_id: str, device_ids: npt.NDArray[np.uint64]
) -> dict[str, Any]:
    """The accelerated-processing request of one incident (devices as raw little-endian u64)."""
    return {
        "region": region,
        "incident_id": incident_id,
        "device_id": np.ascontiguousarray(device_ids, dtype="<u8").tobytes(),
    }


def held_reference(payload: dict[str, Any]) -> dict[str, Any]:
    """The message of a held copy recorded whole in the in-flight ledger: its id, where and
    how many (what Flower, dead letters and the reaper's give-up read), no columns."""
    return {**ledger_reference(payload), wire.HELD_SCREEN_FIELD: True}


def ledger_reference(payload: dict[str, Any]) -> dict[str, Any]:
    """The message of a batch recorded whole in the in-flight ledger (a claim check): its
    id, where and how many, no columns; the task fetches them with one HGET."""
    return {
        "id": payload["id"],
        "region": payload["region"],
        "tier": payload["tier"],
        "n": payload["n"],
        wire.LEDGER_REF_FIELD: True,
    }


class Publisher:
    def __init__(
        self,
        app: Celery,
        ledger: InflightLedgerStore | None,
        clock: Callable[[], float] = time.time,
        region_apps: Mapping[str, Celery] | None = None,
        held_ref_min_readings: int = defaults.HELD_SCREEN_REF_MIN_READINGS,
        claim_check_min_readings: int = defaults.CLAIM_CHECK_MIN_READINGS,
    ) -> None:
        """``region_apps`` are the apps of regions with a broker of their own; ``ledger``
        None only where nothing reaps (a bench measuring the bare broker path); held
        copies of ``held_ref_min_readings`` or more go by reference to their ledger entry,
        and so do standard batches and admitted screening copies of
        ``claim_check_min_readings`` or more to a broker on the ledger's Redis."""
        self.app = app
        self.ledger = ledger
        self.clock = clock
        self.region_apps = dict(region_apps or {})
        self.held_ref_min_readings = held_ref_min_readings
        self.claim_check_min_readings = claim_check_min_readings

    def app_for(self, region: str) -> Celery:
        """The app publishing to ``region``'s broker (its own, or the shared one)."""
        return self.region_apps.get(region, self.app)

    def _record(self, entries: Sequence[tuple[str, str, dict[str, Any], str]]) -> None:
        if self.ledger is not None and entries:
            self.ledger.record_many(entries, self.clock())

    def _record_riding(
        self, producer: Any, entries: Sequence[tuple[str, str, dict[str, Any], str]]
    ) -> bool:
        """Record ``entries`` in the round trip that publishes them, ahead of the messages,
        when the ledger lives where the broker does (one Redis, the default deployment);
        False when it cannot ride along (nothing recorded). Recorded apart, the ledger's
        round trip took as long as the publish's: in a gateway at 1,000,000 readings/s
        on two cores, 4.9 of the 9.5 s it waited on Redis in 20 s of offering."""
        if self.ledger is None:
            return True
        if not isinstance(self.ledger, RedisInflightLedger):
            return False
        commands = self.ledger.record_commands(entries, self.clock()) if entries else []
        return ride_publish_batch(producer, self.ledger.client, commands)

    def _send(self, task: str, args: tuple[Any, ...], queue: str, **options: Any) -> None:
        region = queue.rpartition(".")[0]
        self.app_for(region).send_task(
            task, args=args, queue=queue, serializer=wire.PAYLOAD_SERIALIZER, **options
        )

    # --- data: through the in-flight ledger --------------------------------------------

    def send_routine(self, batches: Sequence[Batch]) -> None:
        """Routine batches flushed together: one round trip for their ledger entries and
        one per broker for their messages.

        A standard batch of ``claim_check_min_readings`` or more goes as a claim check
        (``wire.LEDGER_REF_FIELD``) to a broker on the ledger's Redis: its task fetches the
        columns with one HGET (``tasks.routine``). Remainders and the reaper's resends
        carry their columns.

        Fails fast on a broker error (no reconnect loop): the producer keeps the batch
        in its outbox and tries again.
        """
        sends = [
            (b, queue_name(b.region, b.tier), wire.ROUTINE_TASK, encode_batch(b)) for b in batches
        ]
        riding_refs = {}
        if isinstance(self.ledger, RedisInflightLedger):
            riding_refs = {
                b.batch_id: ledger_reference(payload)
                for b, _, _, payload in sends
                if b.tier != WorkClass.PREMIUM.value and len(b) >= self.claim_check_min_readings
            }
        self._send_batches(sends, riding_refs=riding_refs)

    def send_screens(self, copies: Sequence[tuple[Batch, str, bool]]) -> None:
        """Screening copies sent together, each (batch, queue, held): one round trip for
        their ledger entries and one per broker for their messages. ``held`` marks
        readings held back by admission control, whose screening does not advance the
        stream's screened frontier."""
        sends = []
        refs: dict[str, dict[str, Any]] = {}
        riding_refs: dict[str, dict[str, Any]] = {}
        riding = isinstance(self.ledger, RedisInflightLedger)
        for batch, queue, held in copies:
            payload = encode_batch(batch)
            if held:
                payload[wire.HELD_SCREEN_FIELD] = True
                if self.ledger is not None and len(batch) >= self.held_ref_min_readings:
                    refs[batch.batch_id] = held_reference(payload)
            elif riding and len(batch) >= self.claim_check_min_readings:
                riding_refs[batch.batch_id] = ledger_reference(payload)
            sends.append((batch, queue, wire.SCREEN_TASK, payload))
        self._send_batches(sends, refs, riding_refs)

    def _send_batches(
        self,
        sends: Sequence[tuple[Batch, str, str, dict[str, Any]]],
        refs: Mapping[str, dict[str, Any]] | None = None,
        riding_refs: Mapping[str, dict[str, Any]] | None = None,
    ) -> None:
        """Recorded in the ledger first, then published in one pipeline per broker (kombu's
        publish batch): a message per round trip cost more than the message itself under
        load, and premium waits in the producer meanwhile. A batch id in ``refs`` is
        sent as that reference; its ledger entry keeps the whole payload (the reaper
        sends that one). One in ``riding_refs`` is sent as that reference only to a broker
        on the ledger's Redis (the default deployment): a region with a broker of its own
        gets the columns, so its worker never needs the ledger's server to read a batch."""
        if not sends:
            return
        unrecorded = [(b.batch_id, q, p, task) for b, q, task, p in sends]
        by_app: dict[int, tuple[Celery, list[tuple[Batch, str, str, dict[str, Any]]]]] = {}
        for send in sends:
            app = self.app_for(send[1].rpartition(".")[0])
            by_app.setdefault(id(app), (app, []))[1].append(send)
        refs, riding_refs = refs or {}, riding_refs or {}
        for app, group in by_app.values():
            try:
                with app.producer_or_acquire() as producer, producer.batch(len(group) + 1):
                    # Nothing left to record still tells whether the ledger is this broker's.
                    rides = self._record_riding(producer, unrecorded)
                    if unrecorded and not rides:
                        self._record(unrecorded)
                    unrecorded = []
                    for batch, queue, task, recorded in group:
                        bid = batch.batch_id
                        payload = refs.get(bid) or (riding_refs.get(bid) if rides else None)
                        payload = payload or recorded
                        app.send_task(
                            task,
                            args=(payload,),
                            queue=queue,
                            serializer=wire.PAYLOAD_SERIALIZER,
                            argsrepr=describe(batch),
                            retry=False,
                            producer=producer,
                        )
            except BatchPublishError as exc:
                # The pipeline failed part-way: as a lost connection mid-send, the caller
                # sends the batches again (chunk claims make a second copy harmless).
                raise OperationalError(str(exc)) from exc

    def send_routine_payload(self, batch_id: str, queue: str, payload: dict[str, Any]) -> None:
        """An already encoded routine payload (benches build theirs once and send many)."""
        self._record([(batch_id, queue, payload, wire.ROUTINE_TASK)])
        self._send(wire.ROUTINE_TASK, (payload,), queue)

    def send_remainder(self, payload: dict[str, Any]) -> None:
        """A routine remainder back to its own queue; it replaces the batch's ledger entry,
        so a reaper sends what is left, not the whole batch again."""
        queue = queue_name(str(payload["region"]), str(payload["tier"]))
        self.send_routine_payload(str(payload["id"]), queue, payload)

    def republish(self, batch: InflightBatch) -> None:
        """A ledger entry found overdue by the reaper, sent again as it was recorded."""
        self._send(
            batch.task, (batch.payload,), batch.queue, argsrepr=f"<batch {batch.batch_id} again>"
        )

    def send_alerts(self, payload: dict[str, Any]) -> None:
        """One screened batch's (or dropout sweep's) alerts to the region's anomaly queue,
        under ``wire.alerts_ledger_id`` (carried as ``ledger_id``) in the ledger."""
        queue = queue_name(str(payload["region"]), WorkClass.ANOMALY.value)
        ledger_id = wire.alerts_ledger_id(str(payload["batch_id"]))
        self._send_recorded(wire.ANOMALY_TASK, queue, ledger_id, payload)

    def send_notices(self, region: str, batch_id: str, payload: dict[str, Any]) -> None:
        """Notifications one fold of ``batch_id`` left due, to the region's anomaly queue
        for its sinks (``iotsched.notify``), under ``wire.notices_ledger_id`` in the ledger:
        the fold is claimed, so nothing would derive them again."""
        queue = queue_name(region, WorkClass.ANOMALY.value)
        self._send_recorded(wire.NOTIFY_TASK, queue, wire.notices_ledger_id(batch_id), payload)

    def _send_recorded(
        self, task: str, queue: str, ledger_id: str, payload: dict[str, Any]
    ) -> None:
        """One message recorded in the ledger under ``ledger_id`` (carried in the payload,
        for the task to settle), then sent."""
        payload = {**payload, "ledger_id": ledger_id}
        self._record([(ledger_id, queue, payload, task)])
        self._send(task, (payload,), queue)

    # --- control: derived again from stored state ------------------------------------------

    def send_accelerate(
        self, region: str, incident_id: str, device_ids: npt.NDArray[np.uint64]
    ) -> None:
        queue = queue_name(region, WorkClass.ANOMALY.value)
        self._send(
            wire.ACCELERATE_TASK, (encode_accelerate(region, incident_id, device_ids),), queue
        )

    def send_incident_tick(self, region: str, countdown_s: float) -> None:
        queue = queue_name(region, WorkClass.ANOMALY.value)
        self._send(wire.INCIDENT_TICK_TASK, ({"region": region},), queue, countdown=countdown_s)

    def send_maintenance_run(
        self, region: str, reservation_id: str, try_no: int, due_ts: float
    ) -> None:
        """One try, to start at ``due_ts`` (an ETA when that is still ahead)."""
        eta = datetime.fromtimestamp(due_ts, UTC) if due_ts > self.clock() else None
        self.app_for(region).send_task(
            wire.MAINTENANCE_RUN_TASK,
            args=(reservation_id, try_no),
            queue=queue_name(region, WorkClass.MAINTENANCE.value),
            eta=eta,
            serializer=wire.CONTROL_SERIALIZER,
        )

    def send_probe(self, region: str, enqueued_ts: float, hold_ms: float = 0.0) -> None:
        """A stand-in anomaly task (benches, tests) taking the path real anomaly work takes."""
        queue = queue_name(region, WorkClass.ANOMALY.value)
        self._send(wire.PROBE_TASK, (region, enqueued_ts, hold_ms), queue)
