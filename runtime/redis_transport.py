"""kombu's Redis transport, except that an ack Redis refuses still frees the delivery slot,
and a large base64 body is copied into and out of the message's JSON, not scanned.

kombu's Redis ``QoS.ack`` removes the message from the unacked index first and
forgets the delivery only if that succeeds. When Redis refuses the removal (at
``maxmemory`` it refuses every command queued in a MULTI, the index removal
included; or the connection drops at that moment), the delivery is never
forgotten: with ``worker_prefetch_multiplier = 1`` the worker's only prefetch
slot stays taken and it stops consuming for good, silently (seen in CI: a
region's worker took nothing more for two minutes after Redis went back under
its memory limit). Here the delivery is forgotten anyway. The message stays in
the unacked index, so kombu's visibility-timeout restore delivers it again, and
the routine task's chunk claims make that second delivery apply nothing twice.

kombu JSON-encodes every message it pushes (``Channel._put``), again with the
exchange and routing key for every delivery it records unacked (``QoS.append``), and
decodes every message it pops (``Channel._brpop_read``). A routine batch's body is
~400 KB of base64, and scanning it for escapes was the gateway's largest single cost
at 2x capacity (kombu's ``dumps`` ~0.6 ms a message, paid again per delivery by the
workers, with ``loads`` ~0.2 ms; ``bench/envelope_cost.py`` measures it). Those
three methods are kombu 5.7's own, copied with ``runtime.envelope_json`` in place of
``dumps``/``loads``: it writes the same bytes and reads the same message, splicing
the body instead of scanning it (tests/stores/test_large_body_transport.py compares
them with stock kombu's).

A held screening copy (40,000 readings: 1.28 MB of base64) cost a region worker's parent
17-20 ms of CPU between two tasks (``bench/held_consume_gap.py``), two steps of it far
more than the bytes need: redis-py's hiredis packer copies every argument into one
command (``hiredis.pack_command``: 3.3 ms for 1.71 MB; its Python packer sends a large
argument as it is, 0.003 ms), so the unacked-hash write took 5.0-5.3 ms (now 1.5-1.7),
and kombu's ``base64.b64decode`` took 4.9-5.0 ms (the compiled ``runtime.base64_body``,
0.8-1.0 ms). This transport's connections pack the Python way (the same bytes on the
wire) and its channel decodes large bodies compiled: the parent's CPU per held copy went
from 17-20 ms to 12-13.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from queue import Empty
from time import time
from typing import Any
from urllib.parse import urlparse

import redis
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str
from redis.connection import PythonRespSerializer

from runtime.envelope_json import message_from_json, message_json, unacked_json

log = logging.getLogger(__name__)

#: Base64 bodies from this many characters on are decoded by ``runtime.base64_body``
#: (smaller ones kombu's way: nothing to save there, and no numba import for them).
COMPILED_DECODE_MIN_CHARS = 4096

#: Broker URL schemes this transport serves (a ``rediss://`` URL always carries its
#: ``ssl_cert_reqs``: scheduler.redis_url).
REDIS_SCHEMES = ("redis", "rediss")


class _PythonPacking:
    """A connection that packs commands with redis-py's Python packer even when hiredis is
    installed: it sends an argument over 6,000 bytes as its own buffer, where
    ``hiredis.pack_command`` copies every argument into one (3.3 ms for 1.71 MB: a held
    copy's unacked-hash entry, and the producer's LPUSH of it, are 1.28 MB)."""

    _buffer_cutoff: int
    encoder: Any

    def _construct_command_packer(self, packer: Any) -> Any:
        if packer is not None:
            return packer
        return PythonRespSerializer(self._buffer_cutoff, self.encoder.encode)


class PythonPackingConnection(_PythonPacking, redis.Connection):
    pass


class PythonPackingSSLConnection(_PythonPacking, redis.SSLConnection):
    pass


class SettlingQoS(kombu_redis.QoS):
    def append(self, message: Any, delivery_tag: Any) -> None:
        # kombu 5.7's QoS.append (its branch for redis-py < 3 dropped: kombu 5.7 needs 3+).
        delivery = message.delivery_info
        exchange, routing_key = delivery["exchange"], delivery["routing_key"]
        with self.pipe_or_acquire() as pipe:
            pipe.zadd(self.unacked_index_key, {delivery_tag: time()}).hset(
                self.unacked_key, delivery_tag, unacked_json(message._raw, exchange, routing_key)
            ).execute()
            virtual.QoS.append(self, message, delivery_tag)  # type: ignore[no-untyped-call]

    def ack(self, delivery_tag: Any) -> None:
        try:
            super().ack(delivery_tag)  # type: ignore[no-untyped-call]
        except redis.RedisError as exc:
            self._forget(delivery_tag, "ack", exc)

    def reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        try:
            super().reject(delivery_tag, requeue=requeue)  # type: ignore[no-untyped-call]
        except redis.RedisError as exc:
            self._forget(delivery_tag, "reject", exc)

    def _forget(self, delivery_tag: Any, what: str, exc: redis.RedisError) -> None:
        # The step kombu skipped: the delivery leaves this channel's prefetch count.
        virtual.QoS.ack(self, delivery_tag)  # type: ignore[no-untyped-call]
        log.warning(
            "%s of %s not recorded in Redis (%s): it will be delivered again after the "
            "visibility timeout",
            what,
            delivery_tag,
            exc,
        )


class Channel(kombu_redis.Channel):
    QoS = SettlingQoS
    connection_class = PythonPackingConnection
    connection_class_ssl = PythonPackingSSLConnection

    def decode_body(self, body: Any, encoding: str | None = None) -> Any:
        # kombu's Message decodes every body it is given here, in the worker's parent.
        if (
            encoding == "base64"
            and isinstance(body, str)
            and len(body) >= COMPILED_DECODE_MIN_CHARS
        ):
            from runtime import base64_body  # numba: imported by workers only

            decoded = base64_body.decode(body)
            if decoded is not None:
                return decoded
        return super().decode_body(body, encoding)  # type: ignore[no-untyped-call]

    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        # kombu 5.7's Channel._put, the message encoded by message_json.
        pri = self._get_message_priority(message, reverse=False)  # type: ignore[no-untyped-call]
        key = self._q_for_pri(queue, pri)  # type: ignore[no-untyped-call]
        publish_batch = kwargs.pop("_publish_batch", None)
        payload = message_json(message)

        if publish_batch is not None:
            publish_batch.add("lpush", key, payload)
            if self._expires and queue in self._expires:
                for p in self.priority_steps:
                    publish_batch.add(
                        "pexpire",
                        self._q_for_pri(queue, p),  # type: ignore[no-untyped-call]
                        self._expires[queue],
                    )
            return

        with self.conn_or_acquire() as client:
            if self._expires and queue in self._expires:
                with client.pipeline() as pipe:
                    pipe.lpush(key, payload)
                    for p in self.priority_steps:
                        pipe.pexpire(
                            self._q_for_pri(queue, p),  # type: ignore[no-untyped-call]
                            self._expires[queue],
                        )
                    pipe.execute()
            else:
                client.lpush(key, payload)

    def _brpop_read(self, **options: Any) -> bool:
        # kombu 5.7's Channel._brpop_read, the message decoded by message_from_json.
        try:
            try:
                dest__item = self.client.parse_response(self.client.connection, "BRPOP", **options)
            except self.connection_errors:
                # if there's a ConnectionError, disconnect so the next
                # iteration will reconnect automatically.
                self.client.connection.disconnect()
                raise
            if dest__item:
                dest, item = dest__item
                dest = bytes_to_str(dest).rsplit(self.sep, 1)[0]  # type: ignore[no-untyped-call]
                self._queue_cycle.rotate(dest)
                self.connection._deliver(message_from_json(item), dest)
                return True
            else:
                raise Empty()
        finally:
            self._in_poll = None  # type: ignore[assignment]
            # The BRPOP connection is idle now: kombu flushes a pending re-auth token here.
            self._flush_brpop_reauth()  # type: ignore[no-untyped-call]


class Transport(kombu_redis.Transport):
    Channel = Channel


#: Connection settings two clients share when they reach the same keys as the same user.
_SAME_KEYSPACE = ("host", "port", "path", "db", "username")


def same_keyspace(a: redis.Redis, b: redis.Redis) -> bool:
    """Whether two clients reach the same server, database and user."""
    ka, kb = a.connection_pool.connection_kwargs, b.connection_pool.connection_kwargs
    return all(ka.get(k) == kb.get(k) for k in _SAME_KEYSPACE)


def ride_publish_batch(
    producer: Any, client: redis.Redis, commands: Sequence[tuple[Any, ...]]
) -> bool:
    """Queue ``commands`` (full key names, as ``client`` would send them) at the head of
    ``producer``'s open publish batch (``Producer.batch``), so they reach Redis in the
    batch's one round trip, ahead of its messages. False, with nothing queued, when the
    batch cannot carry them: no batch open, a transport or connection that publishes
    message by message (kombu does so for connections that retry), or a broker on
    another server, database or user than ``client``.

    The batch's pipeline prefixes the keys of upper-case command names with the broker's
    ``global_keyprefix``; these keep their names, so they go in lower case (Redis reads
    command names in any case)."""
    state = getattr(getattr(producer, "_batch_local", None), "current", None)
    channel = getattr(producer, "channel", None)
    if state is None or not isinstance(channel, Channel):
        return False
    session = state._get_session(channel)
    if not isinstance(session, kombu_redis.PublishBatch) or not same_keyspace(
        client, channel.client
    ):
        return False
    for name, *args in commands:
        session.pipeline.execute_command(str(name).lower(), *args)
    return True


def transport_for(broker_url: str | None) -> str | None:
    """The ``broker_transport`` for a broker URL: this module's for Redis, else the scheme's
    own (None lets kombu pick from the URL)."""
    scheme = urlparse(broker_url or "").scheme
    return f"{__name__}:Transport" if scheme in REDIS_SCHEMES else None
