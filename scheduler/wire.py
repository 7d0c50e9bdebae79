"""What travels between processes: task names, fixed queue names, serializers, wire versions.

One leaf module, importing nothing of Celery, so a producer, a bench or a
store that reads broker lists names a task without building the worker's app.
Queue names per region and kind come from ``scheduler.model.queue_name``.
"""

from __future__ import annotations

from typing import Final

#: Routine processing of a micro-batch (or its remainder) on ``{region}.{tier}``.
ROUTINE_TASK: Final = "iotsched.routine"
#: Screening of a batch's readings on ``{region}.screen`` / ``{region}.screen_premium``.
SCREEN_TASK: Final = "iotsched.screen"
#: One screened batch's device alerts folded into incidents, on ``{region}.anomaly``.
ANOMALY_TASK: Final = "iotsched.anomaly"
#: Notifications a fold on the premium lane left due, sent to the sinks on ``{region}.anomaly``.
NOTIFY_TASK: Final = "iotsched.notify"
#: The incident correlator's timers (group wait, growth, resolution), on ``{region}.anomaly``.
INCIDENT_TICK_TASK: Final = "iotsched.incident_tick"
#: Accelerated processing of an incident's pending routine data, on ``{region}.anomaly``.
ACCELERATE_TASK: Final = "iotsched.accelerate"
#: Dropout sweep of one region's detector states, on ``{region}.screen``.
DROPOUT_TASK: Final = "iotsched.dropout_sweep"
#: A stand-in anomaly task (benches, integration tests): records its wait, holds its slot.
PROBE_TASK: Final = "iotsched.anomaly_probe"
#: The maintenance book's beat-driven tick, on ``CONTROL_QUEUE``.
MAINTENANCE_TICK_TASK: Final = "iotsched.maintenance.tick"
#: One try of a maintenance operation, on ``{region}.maintenance``.
MAINTENANCE_RUN_TASK: Final = "iotsched.maintenance.run"

#: Where beat sends the maintenance tick; consumed by the control worker.
CONTROL_QUEUE: Final = "maintenance.control"

#: Batch and alert payloads: numpy columns as raw bytes need a binary codec.
PAYLOAD_SERIALIZER: Final = "msgpack"
#: Small control messages (maintenance tries) stay readable in the broker.
CONTROL_SERIALIZER: Final = "json"
#: Content types workers accept; never pickle (anyone writing to Redis would run code).
ACCEPT_CONTENT: Final = ("msgpack", "json")
#: The broker envelope's content type of a msgpack body (read by the queue scan).
MSGPACK_CONTENT_TYPE: Final = "application/x-msgpack"

#: Screening payload field: True on copies of readings held back by admission control,
#: screened within a budget that skips some devices' readings, so their screening does
#: not advance the stream's screened frontier (``scheduler.held_screening``).
HELD_SCREEN_FIELD: Final = "held"
#: Routine and screening payload field: True on a message that carries no columns, only
#: the batch id of its in-flight ledger entry, where the producer recorded the whole batch
#: anyway (a claim check). A held copy is up to 80,000 readings, about 2 MB: sent whole,
#: the worker's main process received, base64-decoded and msgpack-checked it, then piped
#: it to the pool child, 15-24 % of a loaded region worker's time at 2x capacity before
#: the copy's task started (``Publisher.send_screens``, ``tasks.screen``). Standard
#: routine batches go the same way (``Publisher.send_routine``, ``tasks.routine``).
LEDGER_REF_FIELD: Final = "ledger_ref"

#: Version of the columnar alerts payload (screening and the dropout sweep → anomaly).
ALERTS_WIRE_VERSION: Final = 1


def notices_ledger_id(batch_id: str) -> str:
    """The in-flight ledger entry of the notifications one fold of ``batch_id`` left due
    (``iotsched.notify``)."""
    return f"notices:{batch_id}"


def alerts_ledger_id(batch_id: str) -> str:
    """The in-flight ledger entry of one alerts message (a screened batch's or a sweep's):
    its own namespace, so it never stands for the screening copy of the same batch id."""
    return f"alerts:{batch_id}"
