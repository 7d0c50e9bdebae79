"""Decoding a large base64 message body, compiled: kombu's ``base64.b64decode`` is
CPython 3.11's byte-at-a-time ``binascii`` loop.

A held screening copy of 40,000 readings is 0.96 MB of msgpack, 1.28 MB of base64 in
kombu's envelope; a region worker's parent decoded it in 4.9-5.0 ms (``binascii``), a
quarter of all its CPU for that message (``bench/held_consume_gap.py``). This kernel
decodes it in 0.8-1.0 ms. It takes canonical base64 only (a multiple of 4 characters of the
standard alphabet, ``=`` padding in the last quad only: what kombu's ``b64encode`` writes)
and returns exactly ``base64.b64decode``'s bytes; anything else returns None, and the
caller decodes it kombu's way (same bytes, or same error).

Imported by the transport when it meets its first large body, and by the worker app at
start (``tasks.app``), so a worker compiles (or loads from numba's cache) before its
first held copy; the producer, which only encodes, never imports numba for it.
"""

from __future__ import annotations

import binascii
import re

import numpy as np
from numba import types

from scheduler.jit import kernel

_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
#: Each character's 6 bits; 0xFF for a byte outside the alphabet.
_SEXTETS = np.full(256, 0xFF, dtype=np.uint8)
_SEXTETS[np.frombuffer(_ALPHABET, dtype=np.uint8)] = np.arange(64, dtype=np.uint8)
#: The last quad: two characters, then two more, one and ``=``, or ``==``.
_LAST_QUAD = re.compile(rb"[A-Za-z0-9+/]{2}(?:[A-Za-z0-9+/]{2}|[A-Za-z0-9+/]=|==)")


@kernel(
    types.uint8(
        types.Array(types.uint8, 1, "C", readonly=True),
        types.Array(types.uint8, 1, "C", readonly=True),
        types.uint8[::1],
    )
)
def _decode_quads(text: np.ndarray, sextets: np.ndarray, out: np.ndarray) -> int:
    """Whole quads of ``text`` into ``out`` (3 bytes each); returns the OR of every sextet
    looked up, which is above 63 when a character was outside the alphabet."""
    seen = 0
    for quad in range(text.size // 4):
        a = sextets[text[4 * quad]]
        b = sextets[text[4 * quad + 1]]
        c = sextets[text[4 * quad + 2]]
        d = sextets[text[4 * quad + 3]]
        seen |= a | b | c | d
        out[3 * quad] = (a << 2) | (b >> 4)
        out[3 * quad + 1] = ((b & 0x0F) << 4) | (c >> 2)
        out[3 * quad + 2] = ((c & 0x03) << 6) | d
    return seen


def decode(text: str) -> bytes | None:
    """``base64.b64decode(text)`` when ``text`` is canonical base64, else None."""
    if len(text) < 4 or len(text) % 4 or not text.isascii():
        return None
    ascii_text = text.encode("ascii")
    last = ascii_text[-4:]
    if _LAST_QUAD.fullmatch(last) is None:
        return None
    tail = binascii.a2b_base64(last)
    quads = np.frombuffer(ascii_text, dtype=np.uint8)[:-4]
    out = np.empty(quads.size // 4 * 3 + len(tail), dtype=np.uint8)
    if _decode_quads(quads, _SEXTETS, out) > 63:
        return None
    out[out.size - len(tail) :] = np.frombuffer(tail, dtype=np.uint8)
    return out.tobytes()
