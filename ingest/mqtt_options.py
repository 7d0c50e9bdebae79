"""The MQTT bridge's options and the sizes of its cycles."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_FILTERS = ("devices/+/telemetry", "gateways/+/telemetry")
#: Unacknowledged messages the broker may send this bridge before it waits for acks: the
#: protocol's maximum, so a bridge that falls behind holds its backlog in flight rather
#: than in the broker's per-client queue, which Mosquitto caps (``max_queued_messages``,
#: 1,000 by default) and past which it drops messages.
RECEIVE_MAXIMUM = 65_535
#: Messages decoded and offered to ingest together, at most; and payload bytes, at most
#: (a gateway message carries a hundred readings or more): one cycle stays a few tens of
#: milliseconds, so a premium reading received meanwhile is offered soon.
CYCLE_MESSAGES = 5_000
CYCLE_BYTES = 512 * 1024
#: A cycle is decoded and offered in runs of at most this many messages or payload bytes,
#: and premium-lane messages that arrived meanwhile are offered between runs.
RUN_MESSAGES = 2_000
RUN_BYTES = 128 * 1024
#: A run (or a cycle's re-offers) that took this long or more predicts the next will
#: too: premium readings buffered so far are published before it, not at their age limit
#: (25 ms), which is only checked at the end of the next ingest call.
SLOW_RUN_MS = 10.0
#: How often parked readings are offered again while the bridge is behind its broker:
#: seldom enough that premium readings waiting in the inbox go first, often enough that
#: standard readings keep reaching the workers.
PARKED_BEHIND_WAIT_S = 0.5


@dataclass(frozen=True)
class BridgeOptions:
    group: str = "iotsched"
    filters: tuple[str, ...] = DEFAULT_FILTERS
    client_id: str = "iotsched-bridge"
    session_expiry_s: int = 3600
    receive_maximum: int = RECEIVE_MAXIMUM
    #: Acknowledge (after publishing what the producer holds) at least this often. Each
    #: round cuts every partial batch: at 100 ms gateway traffic went out as many small
    #: tasks (73,000–90,000 readings/s in mqtt-bench, against 100,000–122,000 at 250 ms).
    #: Premium batches still go out on their own age limit (25 ms); only acks wait.
    ack_interval_ms: float = 250.0
    #: Subscribe to the premium topics (each telemetry filter + ``/premium``) on a second
    #: connection whose messages are taken first.
    premium_lane: bool = True
