"""What the bridge tests do as devices: publish at QoS 1, then wait for the bridge."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ingest.mqtt_client import BrokerConfig, connect


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
