"""Given mqtt-bench's simulated fleet publishing through a real broker, premium devices'
readings go to their premium topics (a gateway batch split into its premium part and the
rest), every other reading to the plain topics, and what the publisher reports as
published is what the broker delivered."""

from __future__ import annotations

import json
import queue
import threading
import time

import paho.mqtt.client as mqtt

from bench.mqtt_devices import PublishPlan, publish_share
from ingest.mqtt_client import BrokerConfig, connect


def test_premium_devices_publish_to_their_premium_topics_and_the_rest_to_plain_ones(
    private_mqtt_url: str, topic_root: str
) -> None:
    # Given a subscriber to the whole run's topic tree, and a fleet whose even ids are premium
    got: list[tuple[str, list[int]]] = []
    lock = threading.Lock()
    subscribed = threading.Event()

    def on_message(client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        body = json.loads(msg.payload)
        rows = body if isinstance(body, list) else [body]
        with lock:
            got.append((msg.topic, [r["device_id"] for r in rows]))

    sub = connect(BrokerConfig.from_url(private_mqtt_url), client_id="")
    sub.on_message = on_message
    sub.on_subscribe = lambda *_: subscribed.set()
    sub.loop_start()
    sub.subscribe(f"{topic_root}/#", qos=1)
    assert subscribed.wait(10)
    devices = list(range(1, 201))
    premium = {d for d in devices if d % 2 == 0}
    results: queue.Queue[tuple[int, int, float, float]] = queue.Queue()
    try:
        for per_message in (1, 10):
            got.clear()
            plan = PublishPlan(
                broker_url=private_mqtt_url,
                topic_root=topic_root,
                device_ids=devices,
                messages=50,
                per_message=per_message,
                premium_ids=sorted(premium),
                rate_mps=None,
                seed=1,
                client_id=f"{topic_root}-pub",
            )
            # When a publisher publishes its share
            publish_share(plan, results)
            messages, readings, _, _ = results.get(timeout=30)
            deadline = time.monotonic() + 10
            while sum(len(ids) for _, ids in got) < readings and time.monotonic() < deadline:
                time.sleep(0.05)
            # Then each reading is on its tier's topic, and every one published arrived
            with lock:
                assert readings == 50 * per_message == sum(len(ids) for _, ids in got)
                assert messages == len(got)
                for topic, ids in got:
                    on_premium = topic.endswith("/telemetry/premium")
                    assert all((d in premium) == on_premium for d in ids), topic
                    kind = "devices" if per_message == 1 else "gateways"
                    assert topic.startswith(f"{topic_root}/{kind}/")
    finally:
        sub.disconnect()
        sub.loop_stop()


def test_a_publisher_given_a_start_barrier_publishes_nothing_until_it_is_released(
    private_mqtt_url: str, topic_root: str
) -> None:
    # Given a subscriber to the run's topics and a publisher started with a start barrier
    got: list[str] = []
    subscribed = threading.Event()
    sub = connect(BrokerConfig.from_url(private_mqtt_url), client_id="")
    sub.on_message = lambda _c, _u, msg: got.append(msg.topic)
    sub.on_subscribe = lambda *_: subscribed.set()
    sub.loop_start()
    sub.subscribe(f"{topic_root}/#", qos=1)
    assert subscribed.wait(10)
    plan = PublishPlan(
        broker_url=private_mqtt_url,
        topic_root=topic_root,
        device_ids=list(range(1, 21)),
        messages=20,
        per_message=1,
        premium_ids=[],
        rate_mps=None,
        seed=1,
        client_id=f"{topic_root}-pub",
    )
    results: queue.Queue[tuple[int, int, float, float]] = queue.Queue()
    start = threading.Barrier(2)
    publisher = threading.Thread(target=publish_share, args=(plan, results, start), daemon=True)
    try:
        publisher.start()
        # When the publisher has had time to connect but the barrier is not released
        time.sleep(1.0)
        # Then nothing was published yet
        assert got == [] and results.empty()
        # And once released, it publishes its whole share
        start.wait(timeout=10)
        messages, _readings, _, _ = results.get(timeout=30)
        deadline = time.monotonic() + 10
        while len(got) < messages and time.monotonic() < deadline:
            time.sleep(0.05)
        assert messages == 20 == len(got)
    finally:
        publisher.join(30)
        sub.disconnect()
        sub.loop_stop()
