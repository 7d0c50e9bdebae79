"""kombu's Redis transport, except that an ack Redis refuses still frees the delivery slot.

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
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlparse

import redis
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual

log = logging.getLogger(__name__)

#: Broker URL schemes this transport serves (a ``rediss://`` URL always carries its
#: ``ssl_cert_reqs``: scheduler.redis_url).
REDIS_SCHEMES = ("redis", "rediss")


class SettlingQoS(kombu_redis.QoS):
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


class Transport(kombu_redis.Transport):
    Channel = Channel


def transport_for(broker_url: str | None) -> str | None:
    """The ``broker_transport`` for a broker URL: this module's for Redis, else the scheme's
    own (None lets kombu pick from the URL)."""
    scheme = urlparse(broker_url or "").scheme
    return f"{__name__}:Transport" if scheme in REDIS_SCHEMES else None
