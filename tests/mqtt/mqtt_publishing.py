"""What the bridge tests do as devices (publish at QoS 1, then wait for the bridge), and
the publisher they read what the bridge ingested from."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ingest.mqtt_client import BrokerConfig, connect
from scheduler.model import Batch


def publish_all(
    url: str, messages: Sequence[tuple[str, bytes] | tuple[str, bytes, str | None]]
) -> None:
    """Publish (topic, payload[, content type]) messages and wait until the broker has each."""
    client = connect(BrokerConfig.from_url(url), client_id="", max_inflight=0)
    client.loop_start()
    infos = []
    for topic, payload, *rest in messages:
        props = None
        if rest and rest[0]:
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.ContentType = rest[0]
        infos.append(client.publish(topic, payload, qos=1, properties=props))
    for info in infos:
        info.wait_for_publish(10)
    client.disconnect()
    client.loop_stop()


def wait_until(check: Callable[[], object], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


class Recorder:
    """A producer's publisher that keeps every routine batch; the bridge's network and
    loop threads publish while the test reads, hence the lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.batches: list[Batch] = []

    def publish(self, batch: Batch) -> None:
        with self.lock:
            self.batches.append(batch)

    def device_ids(self) -> list[int]:
        with self.lock:
            return [int(d) for b in self.batches for d in b.device_id]

    def tiers(self) -> dict[int, str]:
        with self.lock:
            return {int(d): b.tier for b in self.batches for d in b.device_id}

    def ingest_ts(self) -> dict[int, float]:
        with self.lock:
            return {
                int(d): float(t)
                for b in self.batches
                for d, t in zip(b.device_id, b.ingest_ts, strict=True)
            }
