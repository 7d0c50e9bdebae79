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
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import paho.mqtt.client as mqtt
import pytest
import redis

from ingest.mqtt_client import BrokerConfig, connect
from scheduler.codec import decode_batch
from scheduler.model import queue_name
from scheduler.registry import generate_registry
from scheduler.settings import Settings
from stores.keys import Keys
from stores.parked_readings import ParkedBatch
from stores.queue_scan import decode_routine
from stores.redis_state import RedisStateStore

pytestmark = pytest.mark.integration


@dataclass
class Stream:
    """What both tests start from: a private broker, a Redis with a 2,000-device
    registry under the test's prefix, and a connected publisher of numbered readings."""

    mqtt_url: str
    redis_url: str
    prefix: str
    root: str
    keys: Keys
    client: redis.Redis
    publisher: mqtt.Client
    device_ids: list[int]

    def publishing(self, pause_s: float = 0.0) -> Callable[[int, int], None]:
        return publishing(self.publisher, self.root, self.device_ids, pause_s)

    def start_bridge(self, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        return start_bridge(self.mqtt_url, self.redis_url, self.prefix, self.root, env)


@pytest.fixture
def stream(
    private_mqtt_url: str, topic_root: str, redis_server: str, key_prefix: str
) -> Iterator[Stream]:
    keys = Keys(key_prefix)
    client = redis.Redis.from_url(redis_server)
    registry = generate_registry(2_000, seed=4)
    RedisStateStore(client, keys).save_registry(registry)
    publisher = connect(BrokerConfig.from_url(private_mqtt_url), client_id="", max_inflight=0)
    publisher.loop_start()
    ids = [int(d) for d in registry.device_id]
    try:
        yield Stream(
            private_mqtt_url, redis_server, key_prefix, topic_root, keys, client, publisher, ids
        )
    finally:
        publisher.disconnect()
        publisher.loop_stop()


def start_bridge(
    mqtt_url: str, redis_url: str, prefix: str, root: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "iotsched.cli", "mqtt-bridge", "--broker", mqtt_url,
            "--topic", f"{root}/devices/+/telemetry", "--group", root,
            "--client-id", f"{root}-bridge", "--session-expiry-s", "300",
            "--redis-url", redis_url, "--prefix", prefix,
        ],
        stdout=subprocess.PIPE,
        env={**os.environ, "IOTSCHED_SCREENING": "0", **(env or {})},
    )  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith(b"subscribed"):
            return proc
    raise AssertionError("the bridge exited before subscribing")


#: How long a bridge may take to exit on SIGTERM: it publishes what it buffered and acks
#: it first. 20 s ran out once in a full CI run on a loaded 2-core machine.
STOP_WAIT_S = 60


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(STOP_WAIT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
        raise AssertionError(f"the bridge did not exit {STOP_WAIT_S} s after SIGTERM") from None
    finally:
        assert proc.stdout is not None
        proc.stdout.close()


def queued_values(client: redis.Redis, keys: Keys, take: bool = False) -> list[float]:
    """Every reading value waiting in the routine broker lists (no workers run here);
    ``take``: popped off them, as workers would."""
    out: list[float] = []
    for region in Settings().regions:
        for kind in ("premium", "standard"):
            for name in keys.broker_queue_lists(queue_name(region, kind)):
                if take:
                    pipe = client.pipeline(transaction=True)
                    pipe.lrange(name, 0, -1)
                    pipe.delete(name)
                    raws = pipe.execute()[0]
                else:
                    raws = client.lrange(name, 0, -1)
                for raw in raws:
                    payload = decode_routine(raw)
                    if payload is not None:
                        out.extend(decode_batch(payload).values[:, 0].tolist())
    return out


def pushed_back(client: redis.Redis, keys: Keys) -> int:
    """Readings ingest pushed back so far (the bridge parks each)."""
    return int(client.hget(keys.counters, "pushed_back") or 0)


def parked_batches(client: redis.Redis, keys: Keys) -> int:
    return sum(int(client.llen(keys.parked(r))) for r in Settings().regions)


def test_a_bridge_killed_mid_stream_loses_nothing(stream: Stream) -> None:
    client, keys = stream.client, stream.keys
    publish = stream.publishing()
    # Given a bridge taking a stream of 1,500 readings
    bridge = stream.start_bridge()
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
    bridge = stream.start_bridge()
    publish(1_500, 1_800)
    try:
        deadline = time.monotonic() + 30
        while len(reached(client, keys, stream.root)) < 1_800 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop(bridge)
    # Then every reading reached the queues, or is parked for when its region has room
    # (no workers run here, so ingest may push back)
    assert reached(client, keys, stream.root) == {float(i) for i in range(1_800)}


def reached(client: redis.Redis, keys: Keys, root: str) -> set[float]:
    """Values of the readings in the routine queues or parked (claimed or not)."""
    seen = set(queued_values(client, keys))
    for region in Settings().regions:
        for name in (keys.parked(region), keys.parked_claimed(region, f"{root}-bridge")):
            for entry in client.lrange(name, 0, -1):
                assert isinstance(entry, bytes)
                seen.update(ParkedBatch.decode(entry).values[:, 0].tolist())
    return seen


def publishing(
    publisher: mqtt.Client, root: str, ids: list[int], pause_s: float = 0.0
) -> Callable[[int, int], None]:
    """Publishes readings whose values are ``first`` … ``last - 1``, one per message;
    ``pause_s`` after every 50 (a stream that lasts, rather than one burst)."""

    def publish(first: int, last: int) -> None:
        infos = []
        for i in range(first, last):
            if pause_s and i % 50 == 0:
                time.sleep(pause_s)
            d = ids[i % len(ids)]
            body = f'{{"device_id": {d}, "ts": {time.time()}, "value": {i}}}'
            infos.append(publisher.publish(f"{root}/devices/{d}/telemetry", body, qos=1))
        for info in infos:
            info.wait_for_publish(10)

    return publish


def test_a_bridge_killed_while_readings_are_parked_loses_nothing(stream: Stream) -> None:
    client, keys = stream.client, stream.keys
    publish = stream.publishing(pause_s=0.1)
    # Given a bridge whose ingest pushes back non-premium readings as soon as anything
    # waits in a region's queues, and "workers" taking the queues every 0.5 s
    tight = {"IOTSCHED_BACKLOG_CAP_READINGS": "1"}
    bridge = stream.start_bridge(tight)
    seen: set[float] = set()
    draining = threading.Event()

    def drain() -> None:
        while not draining.wait(0.5):
            seen.update(queued_values(client, keys, take=True))

    drainer = threading.Thread(target=drain)
    drainer.start()
    feeder = threading.Thread(target=publish, args=(0, 1_500))
    feeder.start()
    try:
        # When it is killed once it has parked readings, while they may still be waiting
        deadline = time.monotonic() + 20
        while not (pushed_back(client, keys) and seen) and time.monotonic() < deadline:
            time.sleep(0.005)
        assert pushed_back(client, keys), "ingest pushed nothing back: nothing was parked"
        deadline = time.monotonic() + 2
        while not parked_batches(client, keys) and time.monotonic() < deadline:
            time.sleep(0.002)
        bridge.send_signal(signal.SIGKILL)
        bridge.wait(10)
        stop(bridge)
        feeder.join(30)
        # and started again under its client id, with 300 more readings after it
        bridge = stream.start_bridge(tight)
        publish(1_500, 1_800)
        deadline = time.monotonic() + 30
        while len(seen) < 1_800 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        try:
            stop(bridge)
        finally:
            draining.set()
            drainer.join(10)
    # Then every reading reached the workers, and nothing is left parked
    seen.update(queued_values(client, keys, take=True))
    assert seen == {float(i) for i in range(1_800)}
    assert parked_batches(client, keys) == 0
