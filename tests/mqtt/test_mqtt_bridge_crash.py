"""Given an ``iotsched mqtt-bridge`` process on a real broker and a real Redis, a bridge
killed (SIGKILL) mid-stream and started again under its client id loses no reading: the
broker redelivers what it had not acknowledged. Delivery is at least once, so a reading
may arrive twice; none may be missing.

What is published while no bridge runs waits in the broker's queue for the session,
which Mosquitto bounds (``max_queued_messages``, 1,000 by default, and a bridge that falls
behind meets the same bound). The test runs its own broker set up as the README asks
(``max_queued_messages 0``), and still publishes the rest once the bridge is back."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import redis

from ingest.mqtt_client import BrokerConfig, connect
from scheduler.codec import decode_batch
from scheduler.model import queue_name
from scheduler.registry import generate_registry
from scheduler.settings import Settings
from stores.keys import Keys
from stores.queue_scan import decode_routine
from stores.redis_state import RedisStateStore

pytestmark = pytest.mark.integration


def start_bridge(mqtt_url: str, redis_url: str, prefix: str, root: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "iotsched.cli", "mqtt-bridge", "--broker", mqtt_url,
            "--topic", f"{root}/devices/+/telemetry", "--group", root,
            "--client-id", f"{root}-bridge", "--session-expiry-s", "300",
            "--redis-url", redis_url, "--prefix", prefix,
        ],
        stdout=subprocess.PIPE,
        env={**os.environ, "IOTSCHED_SCREENING": "0"},
    )  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith(b"subscribed"):
            return proc
    raise AssertionError("the bridge exited before subscribing")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(20)
    assert proc.stdout is not None
    proc.stdout.close()


def queued_values(client: redis.Redis, keys: Keys) -> list[float]:
    """Every reading value waiting in the routine broker lists (no workers run here)."""
    out: list[float] = []
    for region in Settings().regions:
        for kind in ("premium", "standard"):
            for name in keys.broker_queue_lists(queue_name(region, kind)):
                for raw in client.lrange(name, 0, -1):  # type: ignore[union-attr]
                    payload = decode_routine(raw)
                    if payload is not None:
                        out.extend(decode_batch(payload).values[:, 0].tolist())
    return out


def test_a_bridge_killed_mid_stream_loses_nothing(
    private_mqtt_url: str, topic_root: str, redis_server: str, key_prefix: str
) -> None:
    mqtt_url = private_mqtt_url
    keys = Keys(key_prefix)
    client = redis.Redis.from_url(redis_server)
    registry = generate_registry(2_000, seed=4)
    RedisStateStore(client, keys).save_registry(registry)
    ids = [int(d) for d in registry.device_id]
    publisher = connect(BrokerConfig.from_url(mqtt_url), client_id="", max_inflight=0)
    publisher.loop_start()

    def publish(first: int, last: int) -> None:
        infos = []
        for i in range(first, last):
            d = ids[i % len(ids)]
            body = f'{{"device_id": {d}, "ts": {time.time()}, "value": {i}}}'
            infos.append(publisher.publish(f"{topic_root}/devices/{d}/telemetry", body, qos=1))
        for info in infos:
            info.wait_for_publish(10)

    # Given a bridge taking a stream of 1,500 readings
    bridge = start_bridge(mqtt_url, redis_server, key_prefix, topic_root)
    feeder = threading.Thread(target=publish, args=(0, 1_500))
    feeder.start()
    # When it is killed while the stream is still arriving
    deadline = time.monotonic() + 20
    while not queued_values(client, keys) and time.monotonic() < deadline:
        time.sleep(0.01)
    bridge.send_signal(signal.SIGKILL)
    bridge.wait(10)
    stop(bridge)
    feeder.join(30)
    # and started again under its client id, with 300 more readings after it
    bridge = start_bridge(mqtt_url, redis_server, key_prefix, topic_root)
    publish(1_500, 1_800)
    try:
        deadline = time.monotonic() + 30
        while len(set(queued_values(client, keys))) < 1_800 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop(bridge)
        publisher.disconnect()
        publisher.loop_stop()
    # Then every reading reached the queues
    seen = set(queued_values(client, keys))
    assert seen == {float(i) for i in range(1_800)}
