"""RedisStreamSink (the default): XADD to ``Keys.alerts``, trimmed to a bounded length.

Each entry holds a few fields to filter on and ``body``, the whole document as JSON.
``MemorySink`` keeps documents in a list, for the embedded run and tests.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from typing import Any

import redis

from scheduler import defaults
from stores.keys import Keys

#: Alert stream length (approximate MAXLEN; one home: ``scheduler.defaults``).
ALERT_STREAM_MAXLEN = defaults.ALERT_STREAM_MAXLEN


class RedisStreamSink:
    name = "stream"

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        maxlen: int = ALERT_STREAM_MAXLEN,
        approximate: bool = True,
    ) -> None:
        """``approximate`` trimming (the default) lets Redis drop whole nodes, cheaply."""
        self.client = client
        self.keys = keys
        self.maxlen = maxlen
        self.approximate = approximate

    def emit(self, documents: Sequence[dict[str, Any]]) -> None:
        if not documents:
            return
        pipe = self.client.pipeline(transaction=False)
        for doc in documents:
            pipe.xadd(
                self.keys.alerts,
                {
                    "incident_id": doc["incident_id"],
                    "status": doc["status"],
                    "severity": doc["severity"],
                    "region": doc["region"],
                    "body": json.dumps(doc, sort_keys=True),
                },
                maxlen=self.maxlen,
                approximate=self.approximate,
            )
        pipe.execute()


def read_alerts(client: redis.Redis, keys: Keys, count: int = 1_000) -> list[dict[str, Any]]:
    """The newest ``count`` documents of the alert stream, oldest first."""
    entries: Any = client.xrevrange(keys.alerts, count=count)
    return [json.loads(fields[b"body"]) for _id, fields in reversed(entries)]


class MemorySink:
    name = "memory"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.documents: list[dict[str, Any]] = []

    def emit(self, documents: Sequence[dict[str, Any]]) -> None:
        with self._lock:
            self.documents.extend(documents)
