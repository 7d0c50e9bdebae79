"""Given the bytes a broker sends, the bridge's client cuts them into PUBLISH messages
however the reads split them; a run of messages decodes to the same readings, owners
and dead letters in one pass as one message at a time; and premium devices' messages
leave the bridge's inbox first. No broker needed."""

from __future__ import annotations

import json
import math
from typing import Any

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion

from bench.mqtt_devices import publish_packet
from ingest.mqtt_acks import Acks
from ingest.mqtt_client import BufferedClient, Received
from ingest.mqtt_inbox import Inbox
from ingest.mqtt_payload import decode_message, decode_messages
from scheduler.registry import generate_registry
from scheduler.validation import Limits

NOW = 1_800_000_000.0
MSGPACK = "application/msgpack"
LIMITS = Limits()


class ChunkedSocket:
    """Hands out the given bytes in the given pieces, one per recv."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces

    def recv(self, bufsize: int) -> bytes:
        if not self.pieces:
            raise BlockingIOError
        piece = self.pieces.pop(0)
        assert len(piece) <= bufsize
        return piece

    def close(self) -> None:
        pass


def receive(pieces: list[bytes]) -> list[Received]:
    client = BufferedClient(callback_api_version=CallbackAPIVersion.VERSION2)
    got: list[Received] = []
    client.on_received = got.extend
    client._sock = ChunkedSocket(pieces)  # type: ignore[assignment]
    while client._sock.pieces:  # type: ignore[union-attr]
        assert client.loop_read() == 0
    return got


def publish_v5(topic: str, payload: bytes, mid: int, qos: int, props: bytes = b"") -> bytes:
    body = len(topic.encode()).to_bytes(2, "big") + topic.encode()
    if qos:
        body += mid.to_bytes(2, "big")
    body += bytes([len(props)]) + props + payload
    length = len(body)
    vbi = bytearray()
    while True:
        byte, length = length % 128, length // 128
        vbi.append(byte | (0x80 if length else 0))
        if not length:
            break
    return bytes([0x30 | qos << 1]) + bytes(vbi) + body


def reading(device_id: int, value: Any = 1.5) -> bytes:
    return json.dumps({"device_id": device_id, "ts": NOW, "value": value}).encode()


def test_publish_packets_are_cut_the_same_however_the_reads_split_them() -> None:
    big = b"x" * 300  # a two-byte remaining length
    content_type = b"\x03" + len(b"application/msgpack").to_bytes(2, "big")
    content_type += b"application/msgpack"
    stream = (
        publish_packet("devices/1/telemetry", reading(1), 7)
        + publish_v5("gateways/g/telemetry", big, 0, 0)
        + publish_v5("gateways/g/telemetry", b"\x90", 9, 1, content_type)
        # Another property before the content type goes through paho's parser.
        + publish_v5("gateways/g/telemetry", b"\x90", 10, 1, b"\x01\x01" + content_type)
    )
    expected = [
        (b"devices/1/telemetry", reading(1), 7, 1, None),
        (b"gateways/g/telemetry", big, 0, 0, None),
        (b"gateways/g/telemetry", b"\x90", 9, 1, "application/msgpack"),
        (b"gateways/g/telemetry", b"\x90", 10, 1, "application/msgpack"),
    ]
    assert receive([stream]) == expected
    for cut in range(1, len(stream)):
        assert receive([stream[:cut], stream[cut:]]) == expected, cut
    assert receive([stream[i : i + 1] for i in range(len(stream))]) == expected


def one_at_a_time(received: list[Received]) -> tuple[list[Any], ...]:
    rows, others, reasons = [], [], []
    for i, (topic, payload, _mid, _qos, ct) in enumerate(received):
        d = decode_message(topic.decode(), payload, ct, LIMITS, NOW)
        rows += [(i, dev, v) for dev, v in zip(d.device_id, d.values, strict=True)]
        others += [(i, o) for o in d.others]
        reasons += [dl.reason for dl in d.letters]
    return rows, others, sorted(reasons)


def in_one_run(received: list[Received]) -> tuple[list[Any], ...]:
    d = decode_messages(received, LIMITS, NOW)
    rows = sorted(zip(d.owner, d.device_id, d.values, strict=True))
    others = list(zip(d.other_owner, d.others, strict=True))
    return rows, others, sorted(dl.reason for dl in d.letters)


def single(device_id: int, payload: bytes) -> Received:
    return (f"site/devices/{device_id}/telemetry".encode(), payload, device_id, 1, None)


def test_a_run_of_clean_single_readings_becomes_rows_owned_by_their_messages() -> None:
    run = [single(d, reading(d, float(d))) for d in (5, 3, 9)]
    assert in_one_run(run) == ([(0, 5, (5.0,)), (1, 3, (3.0,)), (2, 9, (9.0,))], [], [])


def test_a_run_with_doubtful_messages_decodes_as_one_message_at_a_time() -> None:
    run = [
        single(1, reading(1)),
        single(2, reading(3)),  # another device's reading: topic_mismatch
        single(4, b"{not json"),  # the producer dead-letters it as malformed
        single(5, reading(5, "hot")),  # the producer's checks: wrong_type
        single(6, b'{"device_id": 6, "ts": 1800000000.0, "value": NaN}'),
        single(12, reading(12)),
        (b"gateways/g/telemetry", b"[" + reading(7) + b"]", 0, 1, None),
        (b"gateways/g/telemetry", msgpack.packb([json.loads(reading(8))]), 0, 1, MSGPACK),
        (b"site/devices/9/status", b"{}", 0, 1, None),
        single(10, b"[" + reading(10) + b"," + reading(11) + b"]"),
    ]  # fmt: skip
    assert in_one_run(run) == one_at_a_time(run)
    rows, others, reasons = in_one_run(run)
    assert [(owner, dev) for owner, dev, _ in rows] == [(0, 1), (4, 6), (5, 12), (6, 7), (7, 8)]
    assert math.isnan(rows[1][2][0])  # NaN reaches the producer, which rejects it as not finite
    assert [owner for owner, _ in others] == [2, 3, 9]
    assert reasons == ["malformed", "topic_mismatch"]


def at(topic: str, payload: bytes) -> Received:
    return (topic.encode(), payload, 0, 1, None)


# Messages that are one reading each on their own, or that could pass for other messages'
# readings if a run were decoded as one document: a run must decode as its messages do.
T = f"{NOW}"
TRICKY = [
    single(1, reading(1)),
    single(2, reading(2)),
    single(3, reading(3)),
    # An open string in one payload swallowing the next's start; alone, each is malformed.
    single(1, b'{"device_id":1,"ts":%s,"value":"}' % T.encode()),
    single(2, b'{","value":1.5}'),
    # Two readings in one single's payload (with the two above, three readings named
    # after their topics' devices if the run were one document): not one reading.
    single(3, reading(2) + b"," + reading(3)),
    single(3, reading(3) + b" "),
    single(4, b"[" + reading(4) + b"]"),
    single(5, b'{"device_id":5,"ts":%s,"value":{"x":1}}' % T.encode()),
    single(6, b'{"device_id":6,"ts":%s,"value":1,"value":2}' % T.encode()),
    single(7, b" " + reading(7)),
    at("site/devices/1,2/telemetry", reading(1)),
    at("site/devices//telemetry", reading(8)),
    at("site/devices/007/telemetry", reading(7)),
    at("other/devices/9/telemetry", reading(9)),
    at("site/devices/x/devices/9/telemetry", reading(9)),
    at("devices/9/telemetry", reading(9)),
    at("devices/telemetry", reading(9)),
    at("site/devices/+9/telemetry", reading(9)),
]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(TRICKY), min_size=1, max_size=8))
def test_a_run_decodes_as_its_messages_one_at_a_time(run: list[Received]) -> None:
    assert in_one_run(run) == one_at_a_time(run)


def test_payloads_that_are_readings_only_when_joined_are_malformed() -> None:
    # Given payloads that, joined into one array, would read as devices 1, 2 and 3's
    # readings, each on its device's own topic
    run = [TRICKY[3], TRICKY[4], TRICKY[5]]
    # When the run is decoded together, then nothing is a row: each payload goes to the
    # producer's checks (which dead-letter it as malformed), as it would alone
    rows, others, letters = in_one_run(run)
    assert rows == [] and letters == []
    assert [owner for owner, _ in others] == [0, 1, 2]


def test_premium_devices_messages_leave_the_inbox_first_in_arrival_order() -> None:
    reg = generate_registry(200, seed=1)
    premium = [int(d) for d in reg.device_id[reg.tier == 0][:3]]
    standard = [int(d) for d in reg.device_id[reg.tier > 0][:3]]
    gateway: Received = (b"gateways/g/telemetry", b"[]", 99, 1, None)
    inbox = Inbox(lambda: reg)
    # Given standard messages, a gateway's and an unknown topic ahead of premium ones
    inbox.put([single(standard[0], b"{}"), gateway, single(premium[0], b"{}")])
    inbox.put([single(standard[1], b"{}"), (b"other/topic", b"", 98, 1, None)])
    inbox.put([single(premium[1], b"{}"), single(standard[2], b"{}"), single(premium[2], b"{}")])
    # When the bridge takes a cycle smaller than the backlog, then the next
    taken = [m[2] for m in inbox.take(4, 1 << 20)]
    rest = [m[2] for m in inbox.take(100, 1 << 20)]
    # Then premium devices' messages come first, each class in arrival order
    assert taken == [*premium, standard[0]]
    assert rest == [99, standard[1], 98, standard[2]]
    assert not inbox


def test_without_a_registry_the_inbox_keeps_arrival_order() -> None:
    inbox = Inbox()
    inbox.put([single(3, b"{}"), single(1, b"{}")])
    inbox.put([single(2, b"{}")])
    assert [m[2] for m in inbox.take(2, 1 << 20)] == [3, 1]
    assert [m[2] for m in inbox.take(2, 1)] == [2]


def test_a_premium_device_is_known_by_its_topic_however_the_id_is_written() -> None:
    reg = generate_registry(200, seed=1)
    premium = int(reg.device_id[reg.tier == 0][0])
    standard = int(reg.device_id[reg.tier > 0][0])
    inbox = Inbox(lambda: reg)
    # Given a part whose ids are all plain, then one with a zero-padded premium id
    inbox.put([single(standard, b"{}"), single(premium, b"{}")])
    padded = (f"site/devices/{premium:05d}/telemetry".encode(), b"{}", 77, 1, None)
    inbox.put([single(standard, b"{}"), padded])
    # When the bridge takes them, then both premium messages come first
    assert [m[2] for m in inbox.take(10, 1 << 20)] == [premium, 77, standard, standard]


def test_a_take_stops_past_its_bytes_across_classes() -> None:
    reg = generate_registry(200, seed=1)
    premium = [int(d) for d in reg.device_id[reg.tier == 0][:2]]
    standard = [int(d) for d in reg.device_id[reg.tier > 0][:2]]
    inbox = Inbox(lambda: reg)
    inbox.put([single(d, b"x" * 10) for d in (standard[0], premium[0], standard[1], premium[1])])
    # 25 bytes: the premium pair (20 bytes) and then one standard message past the limit
    assert [m[2] for m in inbox.take(10, 25)] == [*premium, standard[0]]
    assert inbox.backlog == 1
    assert [m[2] for m in inbox.take(10, 25)] == [standard[1]]
    assert not inbox


def test_acks_go_out_in_arrival_order_as_one_write() -> None:
    client = BufferedClient(callback_api_version=CallbackAPIVersion.VERSION2)
    written: list[bytes] = []
    client._packet_queue = lambda command, packet, mid, qos, info=None: written.append(  # type: ignore[method-assign]
        bytes(packet)
    )
    acks = Acks()
    # Given messages arrived in this order (one tagged with the premium lane's number)
    arrived = [(b"t", b"", mid, 1, None) for mid in (5, 9, (1 << 16) | 2, 7)]
    acks.arrived([*arrived, (b"t", b"", 0, 0, None)])
    # When the bridge has taken them out of order (QoS 0 needs no ack) and sends its acks
    acks.add([(7, 1), ((1 << 16) | 2, 1), (0, 0)])
    acks.add([(9, 1), (5, 1)])
    assert acks.send(client) == 4
    # Then one packet holds a PUBACK per message, oldest first, with the protocol's ids
    assert written == [b"".join(b"\x40\x02" + mid.to_bytes(2, "big") for mid in (5, 9, 2, 7))]
    assert acks.send(client) == 0 and len(written) == 1
