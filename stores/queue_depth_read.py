"""The read side of broker queue depth on Redis (``stores.protocols.QueueDepthRead``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from stores.keys import Keys
from stores.queue_depth import queue_depths


class RedisQueueDepth:
    """Messages waiting per queue on a Redis broker (the broker's client, the deployment's
    keys): every priority list of each queue, one pipelined round trip."""

    def __init__(self, client: Any, keys: Keys) -> None:
        self.client = client
        self.keys = keys

    def depths(self, queues: Sequence[str]) -> dict[str, int]:
        return queue_depths(self.client, self.keys, queues)
