"""MQTT messages → readings: topic parsing and payload decoding for the bridge.

Devices publish one reading as JSON to ``.../devices/{device_id}/telemetry``; gateways
publish a JSON array (or, with content type ``application/msgpack``, a msgpack array)
of readings to ``.../gateways/{gateway_id}/telemetry``. Whatever prefix comes before
``devices``/``gateways`` is the deployment's (or a test's) own namespace.

Readings whose fields already have the exact shape ingest wants ("clean") are taken as
columns, so a gateway's hundred readings cost one vectorised validation; anything else
is handed to the producer as it came, and the producer's own checks dead-letter it with
its reason. The one check only the bridge can make, a device publishing under another
device's topic, is a dead letter with reason ``topic_mismatch``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack

from scheduler.model import DeadLetter
from scheduler.validation import Limits

MSGPACK_TYPES = frozenset(
    {"application/msgpack", "application/x-msgpack", "application/vnd.msgpack"}
)
#: A gateway message may carry at most this many readings (bounded memory per message).
MAX_GATEWAY_READINGS = 10_000
TOPIC_MISMATCH = "topic_mismatch"


@dataclass
class Decoded:
    """What one MQTT message holds: clean readings as rows, the rest for the producer."""

    device_id: list[int] = field(default_factory=list)
    ts: list[float] = field(default_factory=list)
    values: list[tuple[float, ...]] = field(default_factory=list)
    #: Readings (dicts or raw bytes) the producer validates one by one (and dead-letters).
    others: list[Any] = field(default_factory=list)
    letters: list[DeadLetter] = field(default_factory=list)

    @property
    def readings(self) -> int:
        return len(self.device_id) + len(self.others) + sum(dl.readings for dl in self.letters)


def topic_source(topic: str) -> tuple[str, str] | None:
    """("devices" | "gateways", id) for a telemetry topic; None for any other topic."""
    parts = topic.rsplit("/", 3)
    if len(parts) < 3 or parts[-1] != "telemetry" or parts[-3] not in ("devices", "gateways"):
        return None
    return parts[-3], parts[-2]


def decode_message(
    topic: str,
    payload: bytes,
    content_type: str | None,
    limits: Limits,
    now_ts: float,
) -> Decoded:
    out = Decoded()
    source = topic_source(topic)
    if source is None:
        out.letters.append(_letter("malformed", f"not a telemetry topic: {topic}", payload, now_ts))
        return out
    kind, source_id = source
    if kind == "devices":
        _decode_device(out, source_id, payload, content_type, limits, now_ts)
    else:
        _decode_gateway(out, payload, content_type, limits, now_ts)
    return out


def _loads(payload: bytes, content_type: str | None) -> Any:
    if content_type in MSGPACK_TYPES:
        return msgpack.unpackb(payload, raw=False, strict_map_key=False)
    return json.loads(payload)


def _decode_device(
    out: Decoded,
    topic_id: str,
    payload: bytes,
    content_type: str | None,
    limits: Limits,
    now_ts: float,
) -> None:
    if len(payload) > limits.max_reading_bytes:
        out.others.append(payload)  # the producer dead-letters it as oversize
        return
    try:
        obj = _loads(payload, content_type)
    except Exception:  # any decoder error means the same thing: not a reading
        out.others.append(payload)  # malformed, with the producer's reason and detail
        return
    if isinstance(obj, dict) and str(obj.get("device_id")) != topic_id:
        detail = f"topic device {topic_id}, payload device_id {obj.get('device_id')!r}"
        out.letters.append(_letter(TOPIC_MISMATCH, detail, payload, now_ts))
        return
    _take(out, obj, limits)


def _decode_gateway(
    out: Decoded, payload: bytes, content_type: str | None, limits: Limits, now_ts: float
) -> None:
    if len(payload) > limits.max_reading_bytes * MAX_GATEWAY_READINGS:
        out.letters.append(_letter("oversize", f"{len(payload)} bytes", payload[:4096], now_ts))
        return
    try:
        obj = _loads(payload, content_type)
    except Exception:
        out.letters.append(_letter("malformed", "undecodable gateway payload", payload, now_ts))
        return
    if not isinstance(obj, list) or len(obj) > MAX_GATEWAY_READINGS:
        detail = "a gateway payload must be an array of at most 10000 readings"
        out.letters.append(_letter("malformed", detail, payload[:4096], now_ts))
        return
    if not _take_clean_array(out, obj, limits):
        for reading in obj:
            _take(out, reading, limits)


_NUMBER_TYPES = frozenset({int, float})


def _take_clean_array(out: Decoded, readings: list[Any], limits: Limits) -> bool:
    """A gateway array whose readings are all clean, taken in a few C-level passes (set
    of types per column); False, taking nothing, when any reading needs a closer look."""
    metrics = limits.metrics
    width = len(metrics) + 2
    if not readings or set(map(type, readings)) != {dict}:
        return False
    if any(len(r) != width for r in readings):
        return False
    try:
        ids = [r["device_id"] for r in readings]
        ts = [r["ts"] for r in readings]
        columns = [[r[m] for r in readings] for m in metrics]
    except KeyError:
        return False
    if set(map(type, ids)) != {int} or min(ids) < 0 or max(ids) >= 2**63:
        return False
    if not set(map(type, ts)) <= _NUMBER_TYPES:
        return False
    if any(not set(map(type, col)) <= _NUMBER_TYPES for col in columns):
        return False
    out.device_id.extend(ids)
    out.ts.extend(map(float, ts))
    out.values.extend(zip(*columns, strict=True))
    return True


def _take(out: Decoded, obj: Any, limits: Limits) -> None:
    """Clean readings become a row; the rest go to the producer's per-reading checks."""
    metrics = limits.metrics
    if type(obj) is dict and len(obj) == len(metrics) + 2:
        device_id = obj.get("device_id")
        ts = obj.get("ts")
        values = tuple(obj.get(m) for m in metrics)
        if (
            type(device_id) is int
            and 0 <= device_id < 2**63
            and type(ts) in (int, float)
            and all(type(v) in (int, float) for v in values)
        ):
            out.device_id.append(device_id)
            out.ts.append(float(ts))  # type: ignore[arg-type]
            out.values.append(values)  # type: ignore[arg-type]
            return
    out.others.append(obj)


def _letter(reason: str, detail: str, payload: bytes, now_ts: float) -> DeadLetter:
    return DeadLetter(reason, detail, payload, "mqtt", now_ts)


def merge_decoded(parts: Sequence[Decoded]) -> Decoded:
    out = Decoded()
    for p in parts:
        out.device_id.extend(p.device_id)
        out.ts.extend(p.ts)
        out.values.extend(p.values)
        out.others.extend(p.others)
        out.letters.extend(p.letters)
    return out
