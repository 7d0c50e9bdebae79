"""Simulated devices and gateways publishing readings to an MQTT broker (for mqtt-bench).

Each publisher process owns one connection and a share of the fleet. A reading's ``ts``
is the moment it is published, so the event latency the workers record (ts → processed)
is device publish → processed. Only messages the broker acknowledged (QoS 1 PUBACK) are
counted as published.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ingest.mqtt_client import BrokerConfig, connect

#: No cap on publishes awaiting the broker's ack: paho walks its whole outgoing list on
#: every ack when a cap is set, which held one connection to about 5,000 acks/s here.
MAX_INFLIGHT = 0


@dataclass(frozen=True)
class PublishPlan:
    broker_url: str
    topic_root: str
    device_ids: list[int]
    messages: int
    #: Readings per message: 1 publishes to devices/{id}/telemetry, more to gateways/.
    per_message: int
    rate_mps: float | None
    seed: int
    client_id: str


def publish_share(plan: PublishPlan, results: Any) -> None:
    """Publish ``plan.messages`` messages, paced; put (messages, readings, seconds) on results."""
    client = connect(
        BrokerConfig.from_url(plan.broker_url), plan.client_id, max_inflight=MAX_INFLIGHT
    )
    acked = [0]

    def on_publish(*_: Any) -> None:
        acked[0] += 1

    client.on_publish = on_publish
    client.loop_start()
    rng = np.random.default_rng(plan.seed)
    ids = np.asarray(plan.device_ids)
    pick = ids[rng.integers(0, len(ids), plan.messages * plan.per_message)].tolist()
    values = rng.normal(20.0, 2.0, len(pick)).round(3).tolist()
    started = time.time()
    k = 0
    for i in range(plan.messages):
        if plan.rate_mps and i % 50 == 0:
            wait = started + i / plan.rate_mps - time.time()
            if wait > 0:
                time.sleep(wait)
        now = time.time()
        if plan.per_message == 1:
            d = pick[k]
            topic = f"{plan.topic_root}/devices/{d}/telemetry"
            payload = f'{{"device_id":{d},"ts":{now:.6f},"value":{values[k]}}}'
        else:
            topic = f"{plan.topic_root}/gateways/gw{plan.seed}/telemetry"
            payload = json.dumps(
                [
                    {"device_id": pick[j], "ts": now, "value": values[j]}
                    for j in range(k, k + plan.per_message)
                ]
            )
        k += plan.per_message
        client.publish(topic, payload, qos=1)
    deadline = time.time() + 60
    while acked[0] < plan.messages and time.time() < deadline:
        time.sleep(0.01)
    seconds = time.time() - started
    client.disconnect()
    client.loop_stop()
    results.put((acked[0], acked[0] * plan.per_message, seconds))
