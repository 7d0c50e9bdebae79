"""A large base64 body decodes to kombu's bytes, and anything the compiled decoder does not
take is decoded kombu's way, with kombu's result or kombu's error.

Given bodies as kombu's ``b64encode`` writes them (every length of padding, a held
screening copy's size) and text that is not canonical base64 (a character outside the
alphabet, padding inside, a length that is not a multiple of 4, non-ASCII), when the
transport's channel decodes them, then it returns ``base64.b64decode``'s bytes, or
raises what it raises; and its connections put the same bytes on the wire as redis-py's
hiredis packer, a value of a held copy's size included.
"""

from __future__ import annotations

import base64
import binascii
import os

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st
from kombu import Connection
from redis.connection import HiredisRespSerializer

from runtime import base64_body
from runtime.redis_transport import COMPILED_DECODE_MIN_CHARS, transport_for

#: A held screening copy's msgpack body, at most: 40,000 readings of one metric with their
#: own ingest times (wire version 1; held copies share one, 0.96 MB).
HELD_COPY_BYTES = 1_280_160


@given(st.binary(min_size=1, max_size=3000))
def test_canonical_base64_decodes_to_its_bytes(raw: bytes) -> None:
    assert base64_body.decode(base64.b64encode(raw).decode()) == raw


def test_a_held_copy_sized_body_decodes_to_its_bytes() -> None:
    raw = os.urandom(HELD_COPY_BYTES)
    assert base64_body.decode(base64.b64encode(raw).decode()) == raw


#: The alphabet, padding, and characters that are not canonical base64.
TEXT = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=-_ \n\té"


@given(st.text(alphabet=TEXT))
def test_any_text_decodes_as_b64decode_or_is_left_to_it(text: str) -> None:
    decoded = base64_body.decode(text)
    if decoded is not None:
        assert decoded == base64.b64decode(text)


@pytest.mark.parametrize(
    "text",
    [
        "QUJD" * 3 + "QU=D",  # padding before the last character
        "QUJD" * 3 + "Q===",  # one character of a quad
        "QUJ=" + "QUJD" * 3,  # padding in an earlier quad
        "QUJD" * 3 + "QUJ",  # not a multiple of 4
        "QU-D" + "QUJD" * 3,  # urlsafe alphabet
        "QUJD\n" * 4,  # line breaks (b64decode drops them)
        "QUJDé" + "QUJ",  # not ASCII
        "====",
        "",
    ],
)
def test_text_that_is_not_canonical_base64_is_left_to_kombu(text: str) -> None:
    assert base64_body.decode(text) is None


def _channel_decode(url: str, body: str) -> bytes:
    with Connection(url, transport=transport_for(url)) as conn:
        return bytes(conn.default_channel.decode_body(body, "base64"))


@pytest.mark.integration
def test_the_channel_decodes_large_bodies_as_kombu_does(redis_server: str) -> None:
    raw = os.urandom(HELD_COPY_BYTES)
    canonical = base64.b64encode(raw).decode()
    assert _channel_decode(redis_server, canonical) == raw
    # Not canonical, so decoded kombu's way: line breaks dropped, as b64decode drops them.
    wrapped = base64.encodebytes(raw[:COMPILED_DECODE_MIN_CHARS]).decode()
    assert _channel_decode(redis_server, wrapped) == raw[:COMPILED_DECODE_MIN_CHARS]
    broken = canonical[: COMPILED_DECODE_MIN_CHARS + 1]
    with pytest.raises(binascii.Error):
        _channel_decode(redis_server, broken)


@pytest.mark.integration
def test_connections_send_the_bytes_hiredis_would(redis_server: str, key_prefix: str) -> None:
    value = os.urandom(HELD_COPY_BYTES)
    commands = [("ZADD", f"{key_prefix}:i", 1.5, "tag"), ("HSET", f"{key_prefix}:h", "tag", value)]
    with Connection(redis_server, transport=transport_for(redis_server)) as conn:
        client = conn.default_channel.client
        connection = client.connection_pool.get_connection()
        try:
            chunks = connection.pack_commands(commands)
            # The large value goes as its own buffer, not copied into one command.
            assert any(len(chunk) == len(value) for chunk in chunks)
            ours = b"".join(chunks)
            hiredis_packer = HiredisRespSerializer()
            expected = b"".join(
                b"".join(hiredis_packer.pack(*(connection.encoder.encode(a) for a in c)))
                for c in commands
            )
            assert ours == expected
        finally:
            client.connection_pool.release(connection)
        client.hset(f"{key_prefix}:h", "tag", value)
    assert redis.Redis.from_url(redis_server).hget(f"{key_prefix}:h", "tag") == value
