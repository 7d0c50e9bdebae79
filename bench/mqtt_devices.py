"""Simulated devices and gateways publishing readings to an MQTT broker (for mqtt-bench).

Each publisher process owns one MQTT v5 connection and a share of the fleet, and speaks
the protocol directly (CONNECT, PUBLISH at QoS 1, PUBACK): a fleet of real devices costs
the broker, not the machine it is simulated on, so the simulation must stay cheap next to
the bridge it measures (a paho publish costs about as much as the bridge's whole work on
a message). A reading's ``ts`` is the moment it is published, so the event latency the
workers record (ts → processed) is device publish → processed. Only messages the broker
acknowledged (PUBACK) are counted as published.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ingest.mqtt_client import BrokerConfig, encode_vbi

#: Readings a publisher sends ahead of the broker's acknowledgements, at most (as every
#: device's client keeps a few publishes in flight): at full speed the fleet waits for
#: the broker rather than queueing without bound inside it, so what latency shows at
#: full speed is the pipeline's, plus at most this window's wait in the broker.
MAX_INFLIGHT_READINGS = 10_000
#: Messages written to the socket per send.
SEND_MESSAGES = 200


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


def _utf8(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("!H", len(raw)) + raw


def connect_packet(client_id: str, username: str | None, password: str | None) -> bytes:
    flags = 0x02 | (0x80 if username else 0) | (0x40 if password else 0)  # clean start
    body = b"\x00\x04MQTT\x05" + bytes([flags]) + struct.pack("!H", 60) + b"\x00"
    body += _utf8(client_id)
    if username:
        body += _utf8(username)
    if password:
        body += _utf8(password)
    return b"\x10" + encode_vbi(len(body)) + body


def publish_packet(topic: str, payload: bytes, packet_id: int) -> bytes:
    """PUBLISH at QoS 1 with no properties."""
    body = _utf8(topic) + struct.pack("!H", packet_id) + b"\x00" + payload
    return b"\x32" + encode_vbi(len(body)) + body


class AckCounter(threading.Thread):
    """Reads the broker's packets and counts PUBACKs."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(daemon=True)
        self.sock = sock
        self.acked = 0
        self.closed = False

    def run(self) -> None:
        buf = bytearray()
        while True:
            try:
                chunk = self.sock.recv(1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                self.closed = True
                return
            buf += chunk
            pos = 0
            while len(buf) - pos >= 2:
                length, mult, i = 0, 1, pos + 1
                while i < len(buf):
                    length += (buf[i] & 0x7F) * mult
                    mult *= 128
                    i += 1
                    if not buf[i - 1] & 0x80:
                        break
                else:
                    break
                if i + length > len(buf):
                    break
                if buf[pos] >> 4 == 4:
                    self.acked += 1
                pos = i + length
            del buf[:pos]


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            break
        out += chunk
    return out


def publish_share(plan: PublishPlan, results: Any) -> None:
    """Publish ``plan.messages`` messages, paced; put (messages, readings, seconds) on results."""
    broker = BrokerConfig.from_url(plan.broker_url)
    sock = socket.create_connection((broker.host, broker.port))
    sock.sendall(connect_packet(plan.client_id, broker.username, broker.password))
    head = _recv_exact(sock, 2)
    connack = _recv_exact(sock, head[1]) if head[0] == 0x20 and head[1] < 128 else b""
    if len(connack) < 2 or connack[1] != 0:
        raise SystemExit(f"mqtt-bench: the broker refused the publisher: {head + connack!r}")
    acks = AckCounter(sock)
    acks.start()
    rng = np.random.default_rng(plan.seed)
    ids = np.asarray(plan.device_ids)
    pick = ids[rng.integers(0, len(ids), plan.messages * plan.per_message)].tolist()
    values = rng.normal(20.0, 2.0, len(pick)).round(3).tolist()
    window = max(1, MAX_INFLIGHT_READINGS // plan.per_message)
    group = min(SEND_MESSAGES, window)
    topic = f"{plan.topic_root}/gateways/gw{plan.seed}/telemetry"
    started = time.time()
    k = 0
    out = bytearray()
    for i in range(plan.messages):
        if i % group == 0:
            if out:
                sock.sendall(out)
                out = bytearray()
            while i - acks.acked >= window and not acks.closed:
                time.sleep(0.001)
            if plan.rate_mps:
                wait = started + i / plan.rate_mps - time.time()
                if wait > 0:
                    time.sleep(wait)
        # Stamped as it is published: on a shared machine a publisher that falls behind
        # its pace is starved of CPU, not held up by the pipeline; it shows as a lower rate.
        now = time.time()
        if plan.per_message == 1:
            d = pick[k]
            topic = f"{plan.topic_root}/devices/{d}/telemetry"
            payload = f'{{"device_id":{d},"ts":{now:.6f},"value":{values[k]}}}'
        else:
            ts = f"{now:.6f}"
            payload = (
                "["
                + ",".join(
                    [
                        f'{{"device_id":{d},"ts":{ts},"value":{v}}}'
                        for d, v in zip(
                            pick[k : k + plan.per_message],
                            values[k : k + plan.per_message],
                            strict=True,
                        )
                    ]
                )
                + "]"
            )
        k += plan.per_message
        out += publish_packet(topic, payload.encode(), i % 65_535 + 1)
    if out:
        sock.sendall(out)
    deadline = time.time() + 60
    while acks.acked < plan.messages and time.time() < deadline and not acks.closed:
        time.sleep(0.005)
    seconds = time.time() - started
    sock.sendall(b"\xe0\x00")  # DISCONNECT
    sock.close()
    results.put((acks.acked, acks.acked * plan.per_message, seconds))
