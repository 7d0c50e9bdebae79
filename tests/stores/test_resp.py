"""Packed Redis commands: what the packer writes is what redis-py would send, values come
back byte for byte, error replies raise without leaving replies unread on the connection,
and a connection left on an error carries no WATCH to its next user."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import fakeredis
import numpy as np
import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st
from redis._parsers.encoders import Encoder
from redis.backoff import NoBackoff
from redis.connection import PythonRespSerializer
from redis.retry import Retry

from stores.resp import Session, bulk, command, command_head, id_bulks

#: Ids of every decimal width: sorted, runs of equal width are packed as one array each;
#: shuffled, one by one.
EDGE_IDS = np.unique(
    np.r_[
        np.arange(0, 3_000, 7, dtype=np.uint64),
        np.array([99, 100, 999_999, 1_000_000, 2**63, 2**64 - 1], dtype=np.uint64),
    ]
)

_REFERENCE = PythonRespSerializer(6_000, Encoder("utf-8", "strict", False).encode)


def _redis_py_args(*args: Any) -> bytes:
    """What redis-py's own packer sends for one command (the reference)."""
    return b"".join(_REFERENCE.pack(*args))


@pytest.fixture(params=["fakeredis", "redis-server"])
def client(request: pytest.FixtureRequest) -> Iterator[redis.Redis]:
    """A client on fakeredis (as the task tests use) or on the private redis-server."""
    if request.param == "fakeredis":
        fake = fakeredis.FakeRedis()
        yield fake
        fake.flushall()
        return
    url = request.getfixturevalue("redis_server")
    real = redis.Redis.from_url(url)
    real.flushall()
    yield real
    real.flushall()
    real.close()


@settings(max_examples=200, deadline=None)
@given(
    ids=st.lists(st.one_of(st.integers(0, 2**64 - 1), st.integers(0, 2_000)), max_size=400),
    ordered=st.booleans(),
    width=st.integers(0, 40),
    head=st.binary(max_size=12),
    data=st.data(),
)
def test_packed_ids_and_values_match_redis_py_packing(
    ids: list[int], ordered: bool, width: int, head: bytes, data: st.DataObject
) -> None:
    # Given ids of any width, sorted or not, and a fixed-width binary value each
    ids = sorted(ids) if ordered else ids
    values = np.frombuffer(
        data.draw(st.binary(min_size=len(ids) * width, max_size=len(ids) * width)), np.uint8
    ).reshape(len(ids), width)
    arr = np.array(ids, dtype=np.uint64)
    keys = [head + str(i).encode() for i in ids]
    # When they are packed as an MGET's keys and as an MSET's pairs
    # Then the bytes are exactly redis-py's for the same commands
    mget = command_head(b"MGET", len(ids)) + id_bulks(head, arr)
    assert mget == _redis_py_args("MGET", *keys)
    pairs = [x for k, row in zip(keys, values, strict=True) for x in (k, row.tobytes())]
    mset = command_head(b"MSET", 2 * len(ids)) + id_bulks(head, arr, values)
    assert mset == _redis_py_args("MSET", *pairs)


def test_small_commands_encode_arguments_as_redis_py_does() -> None:
    args = ("k", b"\x00bin\r\n", 42, -7, 0.1, 1e300)
    assert command(b"ZADD", *args) == _redis_py_args("ZADD", *args)
    # numpy scalars as the Python numbers they hold (redis-py would send numpy's repr)
    assert command(b"SET", np.float64(2.5), np.int64(3)) == command(b"SET", 2.5, 3)


@pytest.mark.parametrize("order", ["sorted", "mixed"])
def test_binary_values_round_trip_through_mset_and_mget(client: redis.Redis, order: str) -> None:
    # Given values holding CR LF, NUL and trailing NUL bytes, under ids of every width
    rng = np.random.default_rng(1)
    ids = EDGE_IDS if order == "sorted" else rng.permutation(EDGE_IDS)
    values = rng.integers(0, 256, (ids.size, 32), dtype=np.uint8)
    values[:, :2] = np.frombuffer(b"\r\n", np.uint8)
    values[:, -3:] = 0
    # When they are written with one packed MSET and read with one packed MGET
    with Session(client) as session:
        session.run([command_head(b"MSET", 2 * ids.size) + id_bulks(b"t:", ids, values)])
        (back,) = session.run(
            [command_head(b"MGET", ids.size + 1) + id_bulks(b"t:", ids) + bulk(b"t:none")]
        )
    # Then each comes back byte for byte under the key redis-py names, the absent key as None
    assert back == [row.tobytes() for row in values] + [None]
    last = ids.tolist().index(2**64 - 1)
    assert client.get(f"t:{2**64 - 1}") == values[last].tobytes()


def test_empty_lists_pack_to_nothing_and_run_to_no_replies(client: redis.Redis) -> None:
    empty = np.array([], dtype=np.uint64)
    assert id_bulks(b"t:", empty) == b""
    assert id_bulks(b"t:", empty, np.empty((0, 8), np.uint8)) == b""
    with Session(client) as session:
        assert session.run([]) == []
        assert session.transaction([]) == []


def test_an_error_reply_raises_after_every_reply_is_read(client: redis.Redis) -> None:
    # Given a hash under "h"
    client.hset("h", "f", "1")
    with Session(client) as session:
        # When a pipelined run holds a command Redis answers with an error
        with pytest.raises(redis.ResponseError):
            session.run([command(b"SET", "a", 1), command(b"INCR", "h"), command(b"SET", "b", 2)])
        # Then the commands around it ran, and the connection is in step for the next one
        assert session.run([command(b"MGET", "a", "b")]) == [[b"1", b"2"]]


def test_a_command_redis_refuses_to_queue_aborts_the_whole_transaction(
    client: redis.Redis,
) -> None:
    with Session(client) as session, pytest.raises(redis.ResponseError):
        session.transaction([command(b"SET", "a", 1), command(b"SET", "b")])
    assert client.get("a") is None


def test_an_error_inside_exec_raises_after_the_rest_is_applied(client: redis.Redis) -> None:
    client.hset("h", "f", "1")
    with Session(client) as session, pytest.raises(redis.ResponseError):
        session.transaction([command(b"SET", "a", 1), command(b"INCR", "h")])
    assert client.get("a") == b"1"


def test_a_watched_key_changed_makes_the_transaction_apply_nothing(client: redis.Redis) -> None:
    with Session(client) as session:
        session.run([command(b"WATCH", "claim")])
        client.set("claim", 1)  # another delivery, on another connection
        assert session.transaction([command(b"SET", "a", 1)]) is None
    assert client.get("a") is None


def test_a_session_left_on_an_error_hands_no_watch_to_the_next_user(client: redis.Redis) -> None:
    # Given a session that WATCHed a key and then failed
    with pytest.raises(RuntimeError), Session(client) as session:
        session.run([command(b"WATCH", "claim")])
        raise RuntimeError("a bug between WATCH and EXEC")
    client.set("claim", 1)
    # When the pool's connection is used again for a transaction
    with Session(client) as session:
        applied = session.transaction([command(b"SET", "a", 1)])
    # Then the old WATCH is gone with the connection: the transaction applies
    assert applied == [b"OK"]
    assert client.get("a") == b"1"


def test_replies_are_bytes_even_for_a_decoding_client(redis_server: str) -> None:
    client = redis.Redis.from_url(redis_server, decode_responses=True)
    client.set("bin", b"\xff\x00")
    with Session(client) as session:
        assert session.run([command(b"GET", "bin")]) == [b"\xff\x00"]
    client.delete("bin")
    client.close()


def test_a_command_given_in_pieces_is_sent_whole_big_pieces_included(
    client: redis.Redis,
) -> None:
    # Given an MSET whose argument tail (200 KB) comes as a separate piece
    ids = np.arange(1, 801, dtype=np.uint64)
    values = np.random.default_rng(2).integers(0, 256, (ids.size, 256), dtype=np.uint8)
    mset = [command_head(b"MSET", 2 * ids.size), id_bulks(b"p:", ids, values)]
    # When it runs between two small commands
    with Session(client) as session:
        replies = session.run([command(b"SET", "a", 1), mset, command(b"GET", "p:800")])
    # Then each command got its own reply, the big one applied in full
    assert replies == [b"OK", b"OK", values[-1].tobytes()]
    assert client.get("p:1") == values[0].tobytes()


def test_a_connection_lost_between_round_trips_is_reconnected_only_where_retry_is_safe(
    redis_server: str,
) -> None:
    # Given a client whose retry policy allows one retry, and a session whose connection
    # the server drops between two round trips
    client = redis.Redis.from_url(redis_server, retry=Retry(NoBackoff(), 1))
    admin = redis.Redis.from_url(redis_server)
    client.set("k", 1)

    def dropped(session: Session) -> None:
        (me,) = session.run([command(b"CLIENT", "ID")])
        admin.client_kill_filter(_id=me)

    # When a repeatable read runs with retry, it reconnects and answers
    with Session(client) as session:
        dropped(session)
        assert session.run([command(b"GET", "k")], retry=True) == [b"1"]
    # And without retry (a WATCH may be at stake) the loss is raised, not papered over
    with pytest.raises(redis.ConnectionError), Session(client) as session:
        dropped(session)
        session.run([command(b"GET", "k")])
    client.delete("k")
    client.close()
    admin.close()
