"""Given a bridge with its premium lane (premium devices publish to ``.../telemetry/premium``,
taken on a connection of its own): premium topics' readings reach ingest, classified by the
registry as any other, and are acknowledged on their own connection (a restarted bridge
gets nothing again); waiting messages of the premium lane are offered ahead of a backlog
of plain ones, and those arriving while a cycle offers plain ones before that cycle ends."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from mqtt_publishing import Recorder, publish_all, wait_until

from ingest.mqtt_bridge import CYCLE_MESSAGES, BridgeOptions, MqttBridge
from ingest.mqtt_client import BrokerConfig, Received
from ingest.producer import IngestResult, Producer
from scheduler.registry import generate_registry
from stores.memory_state import MemoryStateStore
from stores.parked_readings import MemoryParkedReadings, ParkedBatch

REG = generate_registry(20_000, seed=7)
PREMIUM = [int(d) for d in REG.device_id[REG.tier == 0]]
STANDARD = [int(d) for d in REG.device_id[REG.tier > 0]]


def body(*device_ids: int) -> bytes:
    rows = [{"device_id": d, "ts": time.time(), "value": 1.0} for d in device_ids]
    return json.dumps(rows[0] if len(rows) == 1 else rows).encode()


@contextmanager
def running_bridge(url: str, root: str, pub: Recorder) -> Iterator[MqttBridge]:
    producer = Producer(lambda: REG, pub, MemoryStateStore())
    options = BridgeOptions(
        group=root,
        filters=(f"{root}/devices/+/telemetry", f"{root}/gateways/+/telemetry"),
        client_id=f"{root}-bridge",
        session_expiry_s=60,  # a restart under the same id gets what was not acknowledged
    )
    bridge = MqttBridge(producer, BrokerConfig.from_url(url), options, registry=lambda: REG)
    thread = threading.Thread(target=bridge.run, daemon=True)
    thread.start()
    assert bridge.subscribed.wait(10), "the bridge did not subscribe on both connections"
    try:
        yield bridge
    finally:
        bridge.stop()
        thread.join(10)


def test_premium_topics_reach_ingest_classified_by_the_registry_and_acked_on_their_lane(
    private_mqtt_url: str, topic_root: str
) -> None:
    premium, standard = PREMIUM[:40], STANDARD[:40]
    messages = [
        *((f"{topic_root}/devices/{d}/telemetry/premium", body(d)) for d in premium[:20]),
        (f"{topic_root}/gateways/gw1/telemetry/premium", body(*premium[20:])),
        # A standard device on a premium topic: the topic picks the lane, not the tier.
        (f"{topic_root}/devices/{standard[0]}/telemetry/premium", body(standard[0])),
        *((f"{topic_root}/devices/{d}/telemetry", body(d)) for d in standard[1:20]),
        (f"{topic_root}/gateways/gw2/telemetry", body(*standard[20:])),
    ]
    pub = Recorder()
    # Given a bridge subscribed on its plain and premium connections
    with running_bridge(private_mqtt_url, topic_root, pub) as bridge:
        # When devices and gateways publish to premium and plain topics
        publish_all(private_mqtt_url, messages)
        # Then every message is acknowledged and every reading published once
        wait_until(lambda: bridge.stats.acked >= len(messages))
        assert sorted(pub.device_ids()) == sorted(premium + standard)
        # And each reading's tier is the registry's, whatever topic it came on
        tiers = pub.tiers()
        assert {tiers[d] for d in premium} == {REG.topology.tiers[0]}
        assert REG.topology.tiers[0] not in {tiers[d] for d in standard}
    # And a restarted bridge under the same client id gets nothing again: each ack went
    # out on the connection its message came on
    with running_bridge(private_mqtt_url, topic_root, pub) as bridge:
        time.sleep(1.0)
        assert bridge.stats.messages == 0
    assert len(pub.device_ids()) == len(premium) + len(standard)


def _message(topic: bytes, device_id: int, mid: int) -> Received:
    return (topic, body(device_id), mid, 1, None)


def test_premium_lane_messages_are_offered_ahead_of_a_backlog_of_plain_ones() -> None:
    # Given a bridge whose inbox holds more plain messages than one cycle takes, and then
    # messages of the premium lane
    pub = Recorder()
    producer = Producer(lambda: REG, pub, MemoryStateStore())
    bridge = MqttBridge(producer, BrokerConfig("127.0.0.1", 1), registry=lambda: REG)
    plain = STANDARD[: CYCLE_MESSAGES + 1_000]
    bridge.receiver.plain(
        [_message(b"t/devices/%d/telemetry" % d, d, i % 65_535 + 1) for i, d in enumerate(plain)]
    )
    lane = PREMIUM[:50]
    bridge.receiver.premium(
        [_message(b"t/devices/%d/telemetry/premium" % d, d, i + 1) for i, d in enumerate(lane)]
    )
    # When it runs one cycle
    bridge.step()
    producer.flush()
    # Then the premium lane's readings were all offered in it, and part of the backlog
    first = pub.device_ids()
    assert set(lane) <= set(first)
    assert len(set(first) & set(plain)) < len(plain)
    # And the rest follows in the next cycles
    deadline = time.monotonic() + 20
    while len(pub.device_ids()) < len(plain) + len(lane) and time.monotonic() < deadline:
        bridge.step()
        producer.flush()
    assert sorted(pub.device_ids()) == sorted(plain + lane)


class OfferLog(Producer):
    """A producer that notes the device ids of each offer, in order, and calls
    ``during_first_offer`` while it takes the first (messages arriving meanwhile)."""

    def __init__(self, pub: Recorder) -> None:
        super().__init__(lambda: REG, pub, MemoryStateStore())
        self.offers: list[list[int]] = []
        self.during_first_offer: Callable[[], None] = lambda: None

    def ingest_columns(self, device_id: Any, *args: Any, **kwargs: Any) -> IngestResult:
        self.offers.append([int(d) for d in np.asarray(device_id)])
        if len(self.offers) == 1:
            self.during_first_offer()
        return super().ingest_columns(device_id, *args, **kwargs)


def test_premium_lane_messages_arriving_mid_cycle_are_offered_before_the_cycle_ends() -> None:
    # Given a bridge taking a full cycle of plain messages
    pub = Recorder()
    producer = OfferLog(pub)
    bridge = MqttBridge(producer, BrokerConfig("127.0.0.1", 1), registry=lambda: REG)
    plain = STANDARD[:CYCLE_MESSAGES]
    bridge.receiver.plain(
        [_message(b"t/devices/%d/telemetry" % d, d, i % 65_535 + 1) for i, d in enumerate(plain)]
    )
    # and premium-lane messages that arrive while it offers the first of them
    lane = PREMIUM[:50]
    producer.during_first_offer = lambda: bridge.receiver.premium(
        [_message(b"t/devices/%d/telemetry/premium" % d, d, i + 1) for i, d in enumerate(lane)]
    )
    # When it runs one cycle
    bridge.step()
    producer.flush()
    # Then the premium readings were offered in that cycle, ahead of some of its plain ones
    offered = [d for offer in producer.offers for d in offer]
    assert sorted(offered) == sorted(plain + lane)
    premium_at = min(offered.index(d) for d in lane)
    assert any(offered.index(d) > premium_at for d in plain)
    # And every reading was published once
    assert sorted(pub.device_ids()) == sorted(plain + lane)


def test_premium_lane_messages_arriving_during_a_parked_re_offer_go_out_in_that_cycle() -> None:
    # Given a bridge with standard readings parked earlier, to be offered again
    pub = Recorder()
    producer = OfferLog(pub)
    parked = MemoryParkedReadings()
    standard = np.asarray(STANDARD[:500], dtype=np.uint64)
    now = time.time()
    parked.park(
        [
            ParkedBatch(
                REG.topology.regions[0], standard, np.full(500, now), np.ones((500, 1)),
                np.full(500, now),
            )
        ]
    )  # fmt: skip
    bridge = MqttBridge(producer, BrokerConfig("127.0.0.1", 1), registry=lambda: REG, parked=parked)
    # and premium-lane messages that arrive while it offers them again
    lane = PREMIUM[:50]
    producer.during_first_offer = lambda: bridge.receiver.premium(
        [_message(b"t/devices/%d/telemetry/premium" % d, d, i + 1) for i, d in enumerate(lane)]
    )
    # When it runs one cycle
    bridge.step()
    # Then the premium readings were offered in that cycle, after the parked ones
    assert [sorted(o) for o in producer.offers] == [sorted(standard.tolist()), sorted(lane)]
