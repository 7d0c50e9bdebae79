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
from itertools import repeat
from operator import itemgetter
from typing import Any

import msgpack
import orjson

from ingest.mqtt_client import Received
from scheduler.model import DeadLetter
from scheduler.validation import Limits

MSGPACK_TYPES = frozenset(
    {"application/msgpack", "application/x-msgpack", "application/vnd.msgpack"}
)
#: A gateway message may carry at most this many readings (bounded memory per message).
MAX_GATEWAY_READINGS = 10_000
TOPIC_MISMATCH = "topic_mismatch"
_TELEMETRY = b"/telemetry"
#: What a payload that does not decode becomes (distinct from a JSON null).
_UNDECODABLE = object()


@dataclass
class Decoded:
    """What a run of MQTT messages holds: clean readings as rows, the rest for the
    producer. ``owner``/``other_owner`` name the message (its index in the run) each
    row or other reading came from; dead letters are final and belong to no one."""

    device_id: list[int] = field(default_factory=list)
    ts: list[float] = field(default_factory=list)
    #: One list per metric, in ``Limits.metrics`` order.
    columns: list[list[float]] = field(default_factory=list)
    owner: list[int] = field(default_factory=list)
    #: Readings (dicts or raw bytes) the producer validates one by one (and dead-letters).
    others: list[Any] = field(default_factory=list)
    other_owner: list[int] = field(default_factory=list)
    letters: list[DeadLetter] = field(default_factory=list)

    @property
    def values(self) -> list[tuple[float, ...]]:
        """The rows' values, one tuple per row."""
        return list(zip(*self.columns, strict=True))

    @property
    def readings(self) -> int:
        return len(self.device_id) + len(self.others) + sum(dl.readings for dl in self.letters)


def topic_source(topic: str) -> tuple[str, str] | None:
    """("devices" | "gateways", id) for a telemetry topic; None for any other topic."""
    parts = topic.rsplit("/", 3)
    if len(parts) < 3 or parts[-1] != "telemetry" or parts[-3] not in ("devices", "gateways"):
        return None
    return parts[-3], parts[-2]


def device_topic_ids(topics: Sequence[bytes]) -> bytes | None:
    """``b"id,id,..."``: what stands between one prefix's ``devices/`` and ``/telemetry``
    in each topic, when every topic has that shape (the usual run: one fleet's single
    readings); None otherwise. The ids are not checked (one may be empty or hold a comma
    or a slash): callers compare the whole with the ids they expect."""
    first = topics[0]
    if not first.endswith(_TELEMETRY):
        return None
    prefix = first[: first.rfind(b"/", 0, len(first) - len(_TELEMETRY)) + 1]
    if prefix != b"devices/" and not prefix.endswith(b"/devices/"):
        return None
    if not all(map(bytes.startswith, topics, repeat(prefix))):
        return None
    if not all(map(bytes.endswith, topics, repeat(_TELEMETRY))):
        return None
    start, stop = len(prefix), -len(_TELEMETRY)
    return b",".join([t[start:stop] for t in topics])


def decode_message(
    topic: str,
    payload: bytes,
    content_type: str | None,
    limits: Limits,
    now_ts: float,
) -> Decoded:
    """One message's readings (see ``decode_messages``)."""
    return decode_messages([(topic.encode(), payload, 0, 1, content_type)], limits, now_ts)


def decode_messages(received: Sequence[Received], limits: Limits, now_ts: float) -> Decoded:
    """The readings of a run of messages, in message order within each kind of source.

    Single JSON readings from devices, the bulk of the traffic, are checked together in
    column passes (``_take_clean_devices``); a run with anything doubtful in it falls
    back to one message at a time, with the same outcome."""
    out = Decoded(columns=[[] for _ in limits.metrics])
    if received and _take_clean_run(out, received, limits):
        return out
    singles: list[int] = []
    single_ids: list[bytes] = []
    max_bytes = limits.max_reading_bytes
    for i, (raw_topic, payload, _mid, _qos, content_type) in enumerate(received):
        parts = raw_topic.rsplit(b"/", 3)
        if (
            len(parts) >= 3
            and parts[-3] == b"devices"
            and parts[-1] == b"telemetry"
            and content_type is None
            and len(payload) <= max_bytes
        ):
            singles.append(i)
            single_ids.append(parts[-2])
            continue
        topic = raw_topic.decode("utf-8", "replace")
        source = topic_source(topic)
        if source is None:
            detail = f"not a telemetry topic: {topic}"
            out.letters.append(_letter("malformed", detail, payload, now_ts))
        elif source[0] == "gateways":
            _decode_gateway(out, i, payload, content_type, limits, now_ts)
        else:
            _decode_device(out, i, source[1], payload, content_type, limits, now_ts)
    if singles:
        payloads = [received[i][1] for i in singles]
        objs = [_loads_or_none(p) for p in payloads]
        if not _take_clean_devices(out, singles, b",".join(single_ids), objs, limits):
            for i, device, obj, payload in zip(singles, single_ids, objs, payloads, strict=True):
                topic_id = device.decode("utf-8", "replace")
                _take_device(out, i, topic_id, obj, payload, limits, now_ts)
    return out


def _take_clean_run(out: Decoded, received: Sequence[Received], limits: Limits) -> bool:
    """A run of nothing but clean single JSON readings, each naming its topic's device,
    taken in whole-run passes; False, taking nothing, when any message needs a closer look."""
    topics = list(map(itemgetter(0), received))
    payloads = list(map(itemgetter(1), received))
    ids = device_topic_ids(topics)
    if ids is None or list(map(itemgetter(4), received)).count(None) != len(received):
        return False
    if max(map(len, payloads)) > limits.max_reading_bytes:
        return False
    objs = _loads_objects(payloads)
    return objs is not None and _take_clean_devices(out, range(len(received)), ids, objs, limits)


def _loads_objects(payloads: list[bytes]) -> list[Any] | None:
    """Each payload's JSON object, decoded as one array when the payloads are all objects
    (one call instead of one per payload); None when any is not, or does not decode.

    Joining is safe only when no payload can lend bytes to another: each starts with
    ``{`` and all of them hold ``{`` as many times as there are payloads. Each object of
    the array starts at a ``{`` outside any string and not nested, so an array of exactly
    that many objects has every ``{`` starting one: the i-th object starts where payload
    i does and ends before payload i + 1 starts, and as the array holds nothing but
    objects, it is payload i, whole."""
    if b"".join(payloads).count(b"{") != len(payloads):
        return None
    if not all(map(bytes.startswith, payloads, repeat(b"{"))):
        return None
    try:
        objs = orjson.loads(b"[" + b",".join(payloads) + b"]")
    except orjson.JSONDecodeError:
        return None
    if len(objs) != len(payloads) or set(map(type, objs)) != {dict}:
        return None
    return objs  # type: ignore[no-any-return]


def _loads(payload: bytes, content_type: str | None) -> Any:
    if content_type in MSGPACK_TYPES:
        return msgpack.unpackb(payload, raw=False, strict_map_key=False)
    obj = _loads_or_none(payload)
    if obj is _UNDECODABLE:
        raise ValueError("undecodable JSON")
    return obj


def _loads_or_none(payload: bytes) -> Any:
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        pass
    # What orjson refuses and json takes (NaN, integers past 64 bits) is decoded as
    # before, so such a reading is dead-lettered for its value, not as malformed.
    try:
        return json.loads(payload)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError: not a reading
        return _UNDECODABLE


def _decode_device(
    out: Decoded,
    owner: int,
    topic_id: str,
    payload: bytes,
    content_type: str | None,
    limits: Limits,
    now_ts: float,
) -> None:
    if len(payload) > limits.max_reading_bytes:
        out.others.append(payload)  # the producer dead-letters it as oversize
        out.other_owner.append(owner)
        return
    try:
        obj = _loads(payload, content_type)
    except Exception:  # any decoder error means the same thing: not a reading
        obj = _UNDECODABLE
    _take_device(out, owner, topic_id, obj, payload, limits, now_ts)


def _take_device(
    out: Decoded,
    owner: int,
    topic_id: str,
    obj: Any,
    payload: bytes,
    limits: Limits,
    now_ts: float,
) -> None:
    if obj is _UNDECODABLE:
        out.others.append(payload)  # malformed, with the producer's reason and detail
        out.other_owner.append(owner)
        return
    if isinstance(obj, dict) and str(obj.get("device_id")) != topic_id:
        detail = f"topic device {topic_id}, payload device_id {obj.get('device_id')!r}"
        out.letters.append(_letter(TOPIC_MISMATCH, detail, payload, now_ts))
        return
    _take(out, owner, obj, limits)


def _take_clean_devices(
    out: Decoded, owners: Sequence[int], topic_ids: bytes, objs: list[Any], limits: Limits
) -> bool:
    """Single readings that are all clean and all name their topic's device (``topic_ids``:
    the topics' ids, comma-separated), taken as rows in a few C-level passes; False,
    taking nothing, when any needs a closer look."""
    clean = _clean_columns(objs, limits)
    # Clean ids are ints, encoded with exactly one comma between ids: equal encodings mean
    # equal ids, message by message.
    if clean is None or topic_ids != orjson.dumps(clean[0])[1:-1]:
        return False
    _extend(out, clean)
    out.owner.extend(owners)
    return True


def _decode_gateway(
    out: Decoded,
    owner: int,
    payload: bytes,
    content_type: str | None,
    limits: Limits,
    now_ts: float,
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
    clean = _clean_columns(obj, limits)
    if clean is not None:
        _extend(out, clean)
        out.owner.extend([owner] * len(obj))
    else:
        for reading in obj:
            _take(out, owner, reading, limits)


_NUMBER_TYPES = frozenset({int, float})


_Columns = tuple[list[int], list[float], list[list[Any]]]


def _clean_columns(readings: list[Any], limits: Limits) -> _Columns | None:
    """(ids, event times, one list per metric) of readings that are all clean, found in
    a few C-level passes (set of types per column); None when any needs a closer look."""
    metrics = limits.metrics
    width = len(metrics) + 2
    if not readings or set(map(type, readings)) != {dict}:
        return None
    if set(map(len, readings)) != {width}:
        return None
    try:
        ids = list(map(itemgetter("device_id"), readings))
        ts = list(map(itemgetter("ts"), readings))
        columns = [list(map(itemgetter(m), readings)) for m in metrics]
    except KeyError:
        return None
    if set(map(type, ids)) != {int} or min(ids) < 0 or max(ids) >= 2**63:
        return None
    if not set(map(type, ts)) <= _NUMBER_TYPES:
        return None
    if any(not set(map(type, col)) <= _NUMBER_TYPES for col in columns):
        return None
    return ids, ts, columns


def _extend(out: Decoded, clean: _Columns) -> None:
    ids, ts, columns = clean
    out.device_id.extend(ids)
    out.ts.extend(map(float, ts))
    for mine, theirs in zip(out.columns, columns, strict=True):
        mine.extend(theirs)


def _take(out: Decoded, owner: int, obj: Any, limits: Limits) -> None:
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
            for column, v in zip(out.columns, values, strict=True):
                column.append(v)  # type: ignore[arg-type]
            out.owner.append(owner)
            return
    out.others.append(obj)
    out.other_owner.append(owner)


def _letter(reason: str, detail: str, payload: bytes, now_ts: float) -> DeadLetter:
    return DeadLetter(reason, detail, payload, "mqtt", now_ts)
