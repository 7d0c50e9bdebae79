"""Given a real MQTT broker and a bridge on it, readings published by devices and gateways
reach ingest; malformed ones are dead-lettered with their reason; two bridges in one
shared-subscription group split the stream without duplicates; readings ingest pushes
back wait unacknowledged while premium ones go through."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import msgpack
import numpy as np
from mqtt_publishing import Recorder, publish_all, wait_until

from ingest.mqtt_bridge import BridgeOptions, MqttBridge
from ingest.mqtt_client import BrokerConfig
from ingest.producer import BacklogGate, Producer
from scheduler.registry import Registry, generate_registry
from stores.memory_state import MemoryStateStore
from stores.parked_readings import MemoryParkedReadings, ParkedReadingsStore

REG = generate_registry(2_000, seed=3)


@contextmanager
def running_bridge(
    url: str,
    root: str,
    client_id: str,
    registry: Registry = REG,
    gate: BacklogGate | None = None,
    parked: ParkedReadingsStore | None = None,
) -> Iterator[tuple[MqttBridge, Recorder, MemoryStateStore]]:
    store = MemoryStateStore()
    pub = Recorder()
    producer = Producer(lambda: registry, pub, store, backlog_gate=gate)
    options = BridgeOptions(
        group=root,
        filters=(f"{root}/devices/+/telemetry", f"{root}/gateways/+/telemetry"),
        client_id=client_id,
        session_expiry_s=0,
    )
    bridge = MqttBridge(
        producer, BrokerConfig.from_url(url), options, registry=lambda: registry, parked=parked
    )
    thread = threading.Thread(target=bridge.run, daemon=True)
    thread.start()
    assert bridge.subscribed.wait(10), "the bridge did not subscribe"
    try:
        yield bridge, pub, store
    finally:
        bridge.stop()
        thread.join(10)


def reading(device_id: int, value: float = 1.0) -> dict[str, object]:
    return {"device_id": device_id, "ts": time.time(), "value": value}


def test_single_and_gateway_readings_reach_ingest(mqtt_url: str, topic_root: str) -> None:
    ids = [int(d) for d in REG.device_id[:300]]
    singles = [
        (f"{topic_root}/devices/{d}/telemetry", json.dumps(reading(d)).encode(), None)
        for d in ids[:100]
    ]
    gateway_json = (
        f"{topic_root}/gateways/gw1/telemetry",
        json.dumps([reading(d) for d in ids[100:200]]).encode(),
        None,
    )
    gateway_msgpack = (
        f"{topic_root}/gateways/gw2/telemetry",
        msgpack.packb([reading(d) for d in ids[200:300]]),
        "application/msgpack",
    )
    with running_bridge(mqtt_url, topic_root, f"{topic_root}-a") as (bridge, pub, store):
        publish_all(mqtt_url, [*singles, gateway_json, gateway_msgpack])
        wait_until(lambda: bridge.stats.acked >= 102)
        assert sorted(pub.device_ids()) == sorted(ids)
        assert store.counters().get("accepted") == 300
        assert store.dead_letters() == []


def test_malformed_payloads_are_dead_lettered_with_reasons(mqtt_url: str, topic_root: str) -> None:
    d0, d1 = int(REG.device_id[0]), int(REG.device_id[1])
    bad = [
        (f"{topic_root}/devices/{d0}/telemetry", b"{not json", None),
        (f"{topic_root}/devices/{d0}/telemetry", json.dumps(reading(d1)).encode(), None),
        (
            f"{topic_root}/devices/{d0}/telemetry",
            json.dumps({**reading(d0), "extra": 1}).encode(),
            None,
        ),
        (f"{topic_root}/gateways/g/telemetry", b'{"device_id": 1}', None),
        (
            f"{topic_root}/gateways/g/telemetry",
            json.dumps([reading(d0), {**reading(d1), "value": "x"}]).encode(),
            None,
        ),
    ]
    with running_bridge(mqtt_url, topic_root, f"{topic_root}-a") as (bridge, pub, store):
        publish_all(mqtt_url, bad)
        wait_until(lambda: bridge.stats.acked >= 5)
        reasons = sorted(dl.reason for dl in store.dead_letters())
        assert reasons == ["extra_field", "malformed", "malformed", "topic_mismatch", "wrong_type"]
        # The good reading in the mixed gateway message still went through.
        assert pub.device_ids() == [d0]
        counters = store.counters()
        assert counters["ingested"] == 6
        assert counters["dead_lettered"] == 5


def test_two_bridges_share_a_subscription_without_duplicates(
    mqtt_url: str, topic_root: str
) -> None:
    ids = [int(d) for d in REG.device_id[:1_000]]
    msgs = [
        (f"{topic_root}/devices/{d}/telemetry", json.dumps(reading(d)).encode(), None) for d in ids
    ]
    with (
        running_bridge(mqtt_url, topic_root, f"{topic_root}-a") as (a, pub_a, _),
        running_bridge(mqtt_url, topic_root, f"{topic_root}-b") as (b, pub_b, _),
    ):
        publish_all(mqtt_url, msgs)
        wait_until(lambda: a.stats.acked + b.stats.acked >= len(ids))
        got_a, got_b = pub_a.device_ids(), pub_b.device_ids()
    assert sorted(got_a + got_b) == sorted(ids)
    assert got_a and got_b, "both bridges took a share"


def test_readings_pushed_back_wait_unacknowledged_while_premium_goes_through(
    mqtt_url: str, topic_root: str
) -> None:
    # Given every region closed to non-premium readings (ingest's backpressure)
    closed = np.ones(len(REG.topology.regions), dtype=bool)
    premium = [int(d) for d in REG.device_id[REG.tier == 0][:20]]
    standard = [int(d) for d in REG.device_id[REG.tier > 0][:50]]
    msgs = [
        (f"{topic_root}/devices/{d}/telemetry", json.dumps(reading(d)).encode(), None)
        for d in standard + premium
    ]
    with running_bridge(mqtt_url, topic_root, f"{topic_root}-a", gate=lambda: closed) as (
        bridge,
        pub,
        _,
    ):
        # When devices of both tiers publish
        publish_all(mqtt_url, msgs)
        wait_until(lambda: bridge.stats.acked >= len(premium))
        time.sleep(0.5)  # several retry intervals
        # Then premium readings are published and acknowledged; standard ones are held,
        # unacknowledged, and not offered again while their region stays closed
        assert sorted(pub.device_ids()) == sorted(premium)
        assert bridge.stats.acked == len(premium)
        assert bridge.stats.pushed_back == len(standard)
        # And once the regions open, the held readings go through
        closed[:] = False
        wait_until(lambda: bridge.stats.acked >= len(msgs))
        assert sorted(pub.device_ids()) == sorted(premium + standard)


def test_readings_pushed_back_are_parked_and_acknowledged_then_offered_when_regions_open(
    mqtt_url: str, topic_root: str
) -> None:
    # Given every region closed to non-premium readings, and a parked-readings store
    closed = np.ones(len(REG.topology.regions), dtype=bool)
    parked = MemoryParkedReadings()
    premium = [int(d) for d in REG.device_id[REG.tier == 0][:20]]
    standard = [int(d) for d in REG.device_id[REG.tier > 0][:50]]
    singles: list[tuple[str, bytes, str | None]] = [
        (f"{topic_root}/devices/{d}/telemetry", json.dumps(reading(d)).encode(), None)
        for d in standard[:30] + premium[:10]
    ]
    mixed = [reading(d) for d in standard[30:] + premium[10:]]
    gateway = (f"{topic_root}/gateways/gw1/telemetry", json.dumps(mixed).encode(), None)
    with running_bridge(
        mqtt_url, topic_root, f"{topic_root}-a", gate=lambda: closed, parked=parked
    ) as (bridge, pub, _):
        # When devices and a gateway publish readings of both tiers
        publish_all(mqtt_url, [*singles, gateway])
        # Then every message is acknowledged: premium readings published, standard parked
        wait_until(lambda: bridge.stats.acked == len(singles) + 1)
        assert sorted(pub.device_ids()) == sorted(premium)
        assert bridge.parking is not None and bridge.parking.parked == len(standard)
        time.sleep(0.3)  # several retry intervals: nothing is offered to a closed region
        assert sorted(pub.device_ids()) == sorted(premium)
        parked_by = time.time()
        # And once the regions open, the parked readings go through, once each, with the
        # time they were first offered (latency runs from it, not from the re-offer)
        closed[:] = False
        wait_until(lambda: len(pub.device_ids()) == len(premium) + len(standard))
        time.sleep(0.2)
        assert sorted(pub.device_ids()) == sorted(premium + standard)
        first_offered = pub.ingest_ts()
        assert all(first_offered[d] < parked_by for d in standard)
        assert sum(parked.waiting(REG.topology.regions).values()) == 0
