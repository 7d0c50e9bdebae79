"""Read the routine batches waiting in a region's broker lists, without taking them.

Accelerated processing (an incident's devices have pending routine data) needs
the payloads that sit in ``{region}.premium`` and ``{region}.standard``. Workers
take messages from the tail of a kombu list (LPUSH, BRPOP), so the head holds the
newest batches, those that would wait longest. The scan reads the head of every
list of both queues (every priority step, ``Keys.broker_queue_lists``), premium
first, with one pipelined round trip of LRANGE (``page_messages`` per list), and
continues only on lists that filled their page while the bounds allow: a short
queue costs one round trip, a deep one about ``max_bytes`` of transfer (a
5,000-reading message is about 220 kB), never the whole list. It stops at
``max_messages`` or ``max_bytes``, whichever comes first.

A message is kombu's JSON envelope around a base64 body; the body of a routine
task (protocol 2, msgpack) is ``[args, kwargs, embed]`` with the batch payload as
``args[0]``. Anything else (another task, another serializer, a compressed or
undecodable body) is skipped: the scan is best effort, the routine task still
processes every message it leaves.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

from scheduler.model import WorkClass, queue_name
from scheduler.wire import LEDGER_REF_FIELD, MSGPACK_CONTENT_TYPE, ROUTINE_TASK
from stores.keys import Keys

#: Defaults per incident update: 500 messages of 5,000 readings is about 30 MB raw at most.
MAX_MESSAGES = 500
MAX_BYTES = 32 * 1024 * 1024
#: LRANGE length per list per round trip: a scan fetches at most about ``max_bytes``
#: plus one round trip's worth (lists x page) past it, whatever the queue depth.
PAGE_MESSAGES = 32
DATA_KINDS: tuple[str, ...] = (WorkClass.PREMIUM.value, WorkClass.STANDARD.value)


@dataclass
class ScanResult:
    """Routine payloads found, and what the bounds left out."""

    payloads: list[dict[str, Any]]
    scanned_messages: int
    scanned_bytes: int
    skipped_messages: int
    #: True when a bound stopped the scan before every fetched message was looked at.
    truncated: bool


def decode_routine(raw: bytes | str | dict[str, Any]) -> dict[str, Any] | None:
    """The batch payload of one broker message of the routine task; None for anything else.

    ``raw`` is kombu's JSON envelope, or the envelope itself (the in-memory transport)."""
    try:
        message = raw if isinstance(raw, dict) else json.loads(raw)
        headers = message.get("headers") or {}
        if headers.get("task") != ROUTINE_TASK:
            return None
        if message.get("content-type") != MSGPACK_CONTENT_TYPE or headers.get("compression"):
            return None
        body = base64.b64decode(message["body"])
        args = msgpack.unpackb(body, raw=False)[0]
    except (ValueError, KeyError, TypeError, IndexError, binascii.Error, msgpack.UnpackException):
        return None
    payload = args[0] if isinstance(args, list) and args else None
    return payload if isinstance(payload, dict) else None


def _entry_payload(blob: bytes | None) -> dict[str, Any] | None:
    """The batch an in-flight ledger entry holds (``stores.inflight``); None when gone or
    unreadable."""
    if blob is None:
        return None
    try:
        payload = msgpack.unpackb(blob, raw=False)["p"]
    except (ValueError, KeyError, TypeError, msgpack.UnpackException):
        return None
    return payload if isinstance(payload, dict) else None


class QueueScan:
    """Bounded reads of a region's routine broker lists (shared client with the broker)."""

    def __init__(
        self,
        client: Any,
        keys: Keys,
        max_messages: int = MAX_MESSAGES,
        max_bytes: int = MAX_BYTES,
        kinds: Sequence[str] = DATA_KINDS,
        page_messages: int = PAGE_MESSAGES,
    ) -> None:
        self.client = client
        self.keys = keys
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.kinds = tuple(kinds)
        self.page_messages = page_messages

    def lists(self, region: str) -> list[str]:
        return [
            name
            for kind in self.kinds
            for name in self.keys.broker_queue_lists(queue_name(region, kind))
        ]

    def routine_payloads(self, region: str) -> ScanResult:
        payloads: list[dict[str, Any]] = []
        messages = size = skipped = 0
        truncated = False
        offset = dict.fromkeys(self.lists(region), 0)
        active = list(offset)
        while active and not truncated:
            # One past the message bound, so a scan that left some out can say so.
            count = min(self.page_messages, self.max_messages - messages + 1)
            pipe = self.client.pipeline(transaction=False)
            for name in active:
                pipe.lrange(name, offset[name], offset[name] + count - 1)
            full = []
            for name, raws in zip(active, pipe.execute(), strict=True):
                offset[name] += len(raws)
                if len(raws) == count:
                    full.append(name)
                for raw in raws:
                    if messages >= self.max_messages or size + len(raw) > self.max_bytes:
                        truncated = True
                        break
                    messages += 1
                    size += len(raw)
                    payload = decode_routine(raw)
                    if payload is None:
                        skipped += 1
                    else:
                        payloads.append(payload)
                if truncated:
                    break
            active = full
        payloads, fetched, cut = self._resolved(payloads, self.max_bytes - size)
        return ScanResult(payloads, messages, size + fetched, skipped, truncated or cut)

    def _resolved(
        self, payloads: list[dict[str, Any]], room_bytes: int
    ) -> tuple[list[dict[str, Any]], int, bool]:
        """``payloads`` with each claim check (``Publisher.send_routine``) replaced by the
        batch its in-flight ledger entry holds, fetched in one round trip, in order, while
        their bytes fit ``room_bytes``; a reference whose entry is gone was settled and is
        left out. (payloads, bytes fetched, whether the bound cut any off.)"""
        refs = [i for i, p in enumerate(payloads) if p.get(LEDGER_REF_FIELD) is True]
        if not refs:
            return payloads, 0, False
        blobs = self.client.hmget(self.keys.inflight, [str(payloads[i].get("id")) for i in refs])
        recorded: dict[int, dict[str, Any] | None] = {}
        fetched, end = 0, len(payloads)
        for i, blob in zip(refs, blobs, strict=True):
            if blob is not None and fetched + len(blob) > room_bytes:
                end = i
                break
            fetched += len(blob or b"")
            recorded[i] = _entry_payload(blob)
        out = [recorded.get(k, p) for k, p in enumerate(payloads[:end])]
        return [p for p in out if p is not None], fetched, end < len(payloads)
