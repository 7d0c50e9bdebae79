"""The spliced JSON of a Redis message is kombu's own JSON, byte for byte, and reads back the same.

Given messages as kombu's Redis channel prepares them (large and small base64 bodies,
unicode headers, priorities, bodies that are not base64), when they are encoded for
the queue or the unacked hash, then the bytes equal kombu's ``dumps`` (as redis-py
would send them) and kombu's ``loads`` gives the same message back.
"""

from __future__ import annotations

import base64
import os
from typing import Any

import pytest
from kombu.utils.json import dumps, loads

from runtime.envelope_json import (
    SPLICE_MIN_CHARS,
    message_from_json,
    message_json,
    unacked_json,
)


def _on_the_wire(payload: str | bytes) -> bytes:
    """What redis-py sends for a value (it encodes a str as UTF-8)."""
    return payload if isinstance(payload, bytes) else payload.encode("utf-8")


def _message(body: Any, body_encoding: str | None = "base64", **headers: Any) -> dict[str, Any]:
    return {
        "body": body,
        "content-encoding": "binary",
        "content-type": "application/x-msgpack",
        "headers": {"task": "iotsched.routine", "id": "b-1", **headers},
        "properties": {
            "correlation_id": "b-1",
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": "eu-west.standard"},
            "priority": 3,
            "body_encoding": body_encoding,
            "delivery_tag": "6c1f0a4e-1",
        },
    }


def _b64(n_bytes: int) -> str:
    return base64.b64encode(os.urandom(n_bytes)).decode("ascii")


BIG = _b64(300_000)

MESSAGES = {
    "large base64 body": _message(BIG),
    "large body, unicode headers": _message(BIG, site="Zürich ☃", note="日本\u2028\x01"),
    "body at the splice threshold": _message("A" * SPLICE_MIN_CHARS),
    "small base64 body": _message(_b64(100)),
    "empty body": _message(""),
    "large body not base64-encoded": _message("x" * 10_000, body_encoding=None),
    "large body with a quote": _message("A" * 5000 + '"' + "A" * 5000),
    "large body with a newline": _message("A" * 5000 + "\n" + "A" * 5000),
    "large body with non-ASCII": _message("A" * 5000 + "é"),
    "large body with a backslash": _message("A" * 5000 + "\\" + "A" * 5000),
    "large body with a tab": _message("A" * 5000 + "\t"),
    "large body with DEL": _message("A" * 5000 + "\x7f"),
    "large printable body, not base64": _message("A b~c!" * 1000),
    "body not first": {k: v for k, v in reversed(_message(BIG).items())},
    "body only": {"body": BIG},
}


@pytest.mark.parametrize("message", MESSAGES.values(), ids=MESSAGES.keys())
def test_a_message_for_the_queue_is_kombus_json_byte_for_byte(message: dict[str, Any]) -> None:
    encoded = message_json(message)
    assert _on_the_wire(encoded) == dumps(message).encode("utf-8")
    assert loads(encoded) == message


@pytest.mark.parametrize("message", MESSAGES.values(), ids=MESSAGES.keys())
def test_an_unacked_entry_is_kombus_json_byte_for_byte(message: dict[str, Any]) -> None:
    encoded = unacked_json(message, "", "eu-west.standard")
    assert _on_the_wire(encoded) == dumps([message, "", "eu-west.standard"]).encode("utf-8")
    assert loads(encoded) == [message, "", "eu-west.standard"]


@pytest.mark.parametrize("message", MESSAGES.values(), ids=MESSAGES.keys())
def test_a_message_read_from_the_queue_is_what_kombu_reads(message: dict[str, Any]) -> None:
    on_the_wire = dumps(message).encode("utf-8")
    read = message_from_json(on_the_wire)
    assert read == loads(on_the_wire)
    assert list(read) == list(loads(on_the_wire))  # same key order too


HEAD = b'{"body": "' + b"A" * 5000 + b'", '

JSON_TEXTS = {
    "compact separators": b'{"body":"' + b"A" * 5000 + b'","headers":{}}',
    "escaped quote in the body": b'{"body": "' + b"A" * 5000 + b'\\"A", "headers": {}}',
    "escaped character in the body": HEAD[:-3] + b'\\u0041", "headers": {}}',
    "DEL in the body": HEAD[:-3] + b'\x7f", "headers": {}}',
    "UTF-8 in the body": HEAD[:-3] + "é".encode() + b'", "headers": {}}',
    "body not a string": b'{"body": 5, "headers": {}}',
    "body key twice, other value": b'{"body": "' + b"A" * 5000 + b'", "body": "B", "headers": {}}',
    "body key twice": b'{"body": "' + b"A" * 5000 + b'", "h": {}, "body": ""}',
    "typed keys beside the body": HEAD + b'"__type__": "x", "__value__": 1}',
    "a typed value inside": HEAD + b'"h": {"__type__": "bytes", "__value__": "YQ=="}}',
}


@pytest.mark.parametrize("text", JSON_TEXTS.values(), ids=JSON_TEXTS.keys())
def test_json_written_by_someone_else_reads_as_kombu_reads_it(text: bytes) -> None:
    assert message_from_json(text) == loads(text)


def test_a_body_with_a_raw_control_character_is_refused_as_kombu_refuses_it() -> None:
    text = b'{"body": "' + b"A" * 5000 + b'\x01A", "headers": {}}'
    with pytest.raises(ValueError):
        loads(text)
    with pytest.raises(ValueError):
        message_from_json(text)
