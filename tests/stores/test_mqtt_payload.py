"""MQTT messages to readings: clean readings become rows, anything doubtful goes to the
producer's own checks, and a device publishing under another's topic is dead-lettered."""

from __future__ import annotations

import json

import msgpack

from ingest.mqtt_payload import decode_message, topic_source
from scheduler.validation import Limits

LIMITS = Limits(metrics=("temp", "hum"))
NOW = 1_800_000_000.0


def r(device_id: object, temp: object = 1.5, hum: object = 40) -> dict[str, object]:
    return {"device_id": device_id, "ts": NOW, "temp": temp, "hum": hum}


def test_topics_name_their_source_whatever_the_prefix() -> None:
    assert topic_source("devices/42/telemetry") == ("devices", "42")
    assert topic_source("site-a/gateways/gw-1/telemetry") == ("gateways", "gw-1")
    assert topic_source("devices/42/status") is None


def test_a_clean_gateway_array_becomes_rows() -> None:
    payload = json.dumps([r(1), r(2, 2.5, 41.0)]).encode()
    d = decode_message("gateways/g/telemetry", payload, None, LIMITS, NOW)
    assert (d.device_id, d.values, d.others, d.letters) == (
        [1, 2],
        [(1.5, 40), (2.5, 41.0)],
        [],
        [],
    )


def test_doubtful_readings_go_to_the_producer_and_clean_ones_stay_rows() -> None:
    payload = msgpack.packb([r(1), r(True), r(3, "hot"), {"device_id": 4}])
    d = decode_message("gateways/g/telemetry", payload, "application/msgpack", LIMITS, NOW)
    assert d.device_id == [1]
    assert d.others == [r(True), r(3, "hot"), {"device_id": 4}]


def test_a_device_publishing_another_devices_reading_is_dead_lettered() -> None:
    d = decode_message("devices/7/telemetry", json.dumps(r(8)).encode(), None, LIMITS, NOW)
    assert [dl.reason for dl in d.letters] == ["topic_mismatch"]
    assert d.device_id == [] and d.readings == 1


def test_undecodable_payloads_are_malformed() -> None:
    single = decode_message("devices/7/telemetry", b"\xff{", None, LIMITS, NOW)
    gateway = decode_message("gateways/g/telemetry", b'{"device_id": 1}', None, LIMITS, NOW)
    assert single.others == [b"\xff{"]  # the producer dead-letters it as malformed
    assert [dl.reason for dl in gateway.letters] == ["malformed"]
