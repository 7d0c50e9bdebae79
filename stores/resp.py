"""Whole Redis commands packed from bytes, run on one pooled connection.

redis-py packs every argument on its own (an isinstance check and an encode per
argument, then a generator over them): for a batch's MGET and MSET of 5,000 device
states that was most of a screening task's time. Here a small command is packed from
its bytes in one format, and the many-argument tail of the hot commands (decimal device
ids, each optionally followed by a fixed-width value) from numpy arrays in a few
whole-array operations. ``Session`` sends packed commands on one connection taken from
the client's own pool and reads the replies with redis-py's parser (hiredis where
installed), so timeouts, reconnects and error replies behave as they do in redis-py.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt
import redis

U64 = npt.NDArray[np.uint64]
U8 = npt.NDArray[np.uint8]

#: One command for a ``Session``: its bytes, or its pieces in order (a batch's big
#: argument tail is sent as it is, not copied into one buffer with the rest).
Command = bytes | list[bytes]
#: Pieces at least this big are sent on their own rather than joined with their neighbours.
_SEND_ALONE_BYTES = 64 * 1024

#: A Redis argument as the packers take it: bytes as they are, str as UTF-8, numbers
#: in decimal (floats as ``repr``, which Redis parses back exactly, like redis-py).
Arg = bytes | str | int | float

#: 10**k for k = 0..19 (10**19 still fits in uint64): a decimal's digit count is where
#: the number sorts among them.
_POW10 = 10 ** np.arange(20, dtype=np.uint64)
#: Above this many runs of equal-width ids per id, packing them one by one is cheaper
#: than one small array per run (ids in no order, of mixed widths).
_RUNS_PER_ID = 1 / 32

MULTI = b"*1\r\n$5\r\nMULTI\r\n"
EXEC = b"*1\r\n$4\r\nEXEC\r\n"


def _encode(arg: Arg) -> bytes:
    if isinstance(arg, bytes):
        return arg
    if isinstance(arg, str):
        return arg.encode()
    if isinstance(arg, float):
        return repr(float(arg)).encode()  # numpy's repr of its float64 names the type
    return b"%d" % arg


def bulk(arg: bytes) -> bytes:
    """One RESP bulk string."""
    return b"$%d\r\n%s\r\n" % (len(arg), arg)


def command(name: bytes, *args: Arg) -> bytes:
    """A whole command (``name`` and its arguments) as RESP."""
    parts = [bulk(name), *(bulk(_encode(a)) for a in args)]
    return b"*%d\r\n%s" % (len(parts), b"".join(parts))


def command_head(name: bytes, n_args: int) -> bytes:
    """The start of a command whose ``n_args`` argument bulks follow (``id_bulks``)."""
    return b"*%d\r\n%s" % (n_args + 1, bulk(name))


def id_bulks(head: bytes, ids: U64, values: U8 | None = None) -> bytes:
    """``head`` + decimal id as one bulk per id, in order; with ``values`` (one fixed-width
    row per id) each id's bulk is followed by its row as another bulk.

    ``len(ids)`` arguments, or twice that with ``values``: an MGET's keys, an MSET's or
    HSET's pairs.
    """
    ids = np.asarray(ids, dtype=np.uint64)
    if values is not None and values.shape[0] != ids.size:
        raise ValueError(f"{values.shape[0]} value rows for {ids.size} ids")
    if ids.size == 0:
        return b""
    widths = np.maximum(np.searchsorted(_POW10, ids, side="right"), 1)
    starts = np.flatnonzero(np.diff(widths)) + 1
    if starts.size > ids.size * _RUNS_PER_ID:
        return _id_bulks_one_by_one(head, ids, values)
    digits = _ascii_digits(ids, int(widths.max()))
    bounds = [0, *starts.tolist(), ids.size]
    runs = [
        _Run(head, digits[lo:hi], int(widths[lo]), None if values is None else values[lo:hi])
        for lo, hi in itertools.pairwise(bounds)
    ]
    out = np.empty(sum(run.size for run in runs), dtype=np.uint8)
    at = 0
    for run in runs:
        run.write(out[at : at + run.size])
        at += run.size
    return out.tobytes()


def _ascii_digits(ids: U64, width: int) -> U8:
    """Each id's decimal digits as ASCII, right-aligned in ``width`` columns."""
    digits = np.empty((ids.size, width), dtype=np.uint8)
    ten = np.uint64(10)
    rest = ids
    for col in range(width - 1, -1, -1):
        # Multiply back and subtract: numpy's divmod on uint64 is about three times slower.
        tens = rest // ten
        digits[:, col] = rest - tens * ten
        rest = tens
    digits += ord("0")
    return digits


class _Run:
    """Bulks of ids sharing one digit count: every row has the same layout, so the run is
    one array: a template row (the fixed bytes) copied to every row, then the columns of
    digits and of values written over it."""

    def __init__(self, head: bytes, digits: U8, width: int, values: U8 | None) -> None:
        key_head = b"$%d\r\n%s" % (len(head) + width, head)
        template = [key_head, bytes(width), b"\r\n"]
        self.columns = [(len(key_head), digits[:, -width:])]
        if values is not None:
            value_head = b"$%d\r\n" % values.shape[1]
            at = len(key_head) + width + 2 + len(value_head)
            self.columns.append((at, values))
            template += [value_head, bytes(values.shape[1]), b"\r\n"]
        self.template = np.frombuffer(b"".join(template), dtype=np.uint8)
        self.rows = digits.shape[0]
        self.size = self.rows * self.template.size

    def write(self, out: U8) -> None:
        rows = out.reshape(self.rows, self.template.size)
        rows[:] = self.template
        for at, block in self.columns:
            rows[:, at : at + block.shape[1]] = block


def _id_bulks_one_by_one(head: bytes, ids: U64, values: U8 | None) -> bytes:
    keys = [bulk(b"%s%d" % (head, i)) for i in ids.tolist()]
    if values is None:
        return b"".join(keys)
    width = values.shape[1]
    value_head = b"$%d\r\n" % width
    flat = np.ascontiguousarray(values).tobytes()
    return b"".join(
        b"%s%s%s\r\n" % (key, value_head, flat[i * width : (i + 1) * width])
        for i, key in enumerate(keys)
    )


class Session:
    """One connection from ``client``'s pool for a run of packed round trips.

    Leaving the block releases the connection; leaving it on an exception disconnects it
    first, since replies may be left unread on it or a WATCH pending.
    """

    def __init__(self, client: Any) -> None:
        self._client = client
        self._conn: Any = None

    def __enter__(self) -> Session:
        # A single-connection client keeps its one connection outside the pool.
        self._conn = self._client.connection or self._client.connection_pool.get_connection()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn, self._conn = self._conn, None
        if exc_type is not None:
            conn.disconnect()
        if self._client.connection is None:
            self._client.connection_pool.release(conn)

    def run(self, commands: Sequence[Command], retry: bool = False) -> list[Any]:
        """Send packed ``commands`` in one go and return one reply each (bytes, never
        decoded); the first error reply raises, once every reply is read.

        ``retry``: on a lost connection reconnect and send again, as redis-py does, under
        the client's retry policy; only for commands safe to repeat and not under a WATCH
        (a reconnect drops the WATCH).
        """
        return _raise_first(self._exchanged(commands, retry))

    def transaction(self, commands: Sequence[Command], retry: bool = False) -> list[Any] | None:
        """MULTI, ``commands``, EXEC in one round trip: EXEC's replies, or None when a
        WATCHed key changed (nothing applied). ``retry`` as for ``run``.

        A command Redis refused to queue aborts the whole transaction and raises (as
        ``ExecAbortError`` or that command's error); an error inside EXEC's replies raises
        after the rest was applied, as in redis-py.
        """
        replies = self._exchanged([MULTI, *commands, EXEC], retry)
        result = replies[-1]
        if isinstance(result, redis.ResponseError):
            refused = [r for r in replies[:-1] if isinstance(r, redis.ResponseError)]
            raise refused[0] if refused else result
        if result is None:
            return None
        return _raise_first(result)

    def _exchanged(self, commands: Sequence[Command], retry: bool) -> list[Any]:
        if not retry:
            return self._exchange(commands)
        conn = self._conn
        replies: list[Any] = conn.retry.call_with_retry(
            lambda: self._exchange(commands), lambda _error: conn.disconnect()
        )
        return replies

    def _exchange(self, commands: Sequence[Command]) -> list[Any]:
        conn = self._conn
        conn.send_packed_command(_coalesced(commands))
        replies: list[Any] = []
        for _ in commands:
            try:
                replies.append(conn.read_response(disable_decoding=True))
            except redis.ResponseError as error:
                # Read on: every reply must leave the socket before the next command.
                replies.append(error)
        return replies


def _coalesced(commands: Sequence[Command]) -> list[bytes]:
    """The commands' pieces as few buffers to send: small neighbours joined (one send),
    big pieces alone (no copy)."""
    out: list[bytes] = []
    small: list[bytes] = []
    for piece in itertools.chain.from_iterable(
        [c] if isinstance(c, bytes) else c for c in commands
    ):
        if len(piece) < _SEND_ALONE_BYTES:
            small.append(piece)
            continue
        if small:
            out.append(b"".join(small))
            small = []
        out.append(piece)
    if small:
        out.append(b"".join(small))
    return out


def _raise_first(replies: list[Any]) -> list[Any]:
    for reply in replies:
        if isinstance(reply, redis.ResponseError):
            raise reply
    return replies
