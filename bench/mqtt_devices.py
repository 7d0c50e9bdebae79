"""Simulated devices and gateways publishing readings to an MQTT broker (for mqtt-bench).

Each publisher process owns a share of the fleet and two MQTT v5 connections (premium
devices' and the others'; one with ``--plain-topics``), and speaks the protocol directly
(CONNECT, PUBLISH at QoS 1, PUBACK): a fleet of real devices costs the broker, not the
machine it is simulated on, so the simulation must stay cheap next to the bridge it
measures (a paho publish costs about as much as the bridge's whole work on a message).
A reading's ``ts`` is the moment it is published, so the event latency the
workers record (ts → processed) is device publish → processed. Only messages the broker
acknowledged (PUBACK) are counted as published.
"""

from __future__ import annotations

import os
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
#: Messages written to the socket per send; and readings, at most: a reading is stamped
#: when its message is built, so a send of 100 gateway batches (10,000 readings) held
#: its first readings for as long as building the rest took (tens of milliseconds, far
#: more when the publisher is preempted) before the broker saw them.
SEND_MESSAGES = 200
SEND_READINGS = 2_000


@dataclass(frozen=True)
class PublishPlan:
    broker_url: str
    topic_root: str
    device_ids: list[int]
    messages: int
    #: Readings per message: 1 publishes to devices/{id}/telemetry, more to gateways/.
    per_message: int
    #: Devices that publish to their premium topic (empty: every device to the plain one).
    premium_ids: list[int]
    rate_mps: float | None
    seed: int
    client_id: str
    #: Added to the publisher process's nice value (``os.nice``). The fleet the publishers
    #: stand for runs on its own hardware: on the bench's shared machine they yield the
    #: CPU to the broker, bridge, Redis and workers they measure rather than take it from
    #: them (at full speed they otherwise hold about a core while the pipeline falls behind).
    nice: int = 0


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


class _Connection:
    """One publisher connection: its socket, PUBACK counter and unsent packets."""

    def __init__(self, broker: BrokerConfig, client_id: str, at_once: bool = False) -> None:
        """``at_once``: each message is written as soon as it is built (see ``publish_share``)."""
        self.at_once = at_once
        self.sock = socket.create_connection((broker.host, broker.port))
        self.sock.sendall(connect_packet(client_id, broker.username, broker.password))
        head = _recv_exact(self.sock, 2)
        connack = _recv_exact(self.sock, head[1]) if head[0] == 0x20 and head[1] < 128 else b""
        if len(connack) < 2 or connack[1] != 0:
            raise SystemExit(f"mqtt-bench: the broker refused the publisher: {head + connack!r}")
        self.acks = AckCounter(self.sock)
        self.acks.start()
        self.sent = 0
        self.out = bytearray()
        #: Readings in the first n + 1 messages sent, for each n.
        self.readings: list[int] = []

    def add(self, topic: str, payload: bytes, readings: int) -> None:
        self.sent += 1
        self.readings.append(readings + (self.readings[-1] if self.readings else 0))
        self.out += publish_packet(topic, payload, (self.sent - 1) % 65_535 + 1)
        if self.at_once:
            self.send()

    def send(self) -> None:
        if self.out:
            self.sock.sendall(self.out)
            self.out = bytearray()

    def wait_window(self, window: int) -> None:
        while self.sent - self.acks.acked >= window and not self.acks.closed:
            time.sleep(0.001)

    def finish(self, deadline: float) -> tuple[int, int]:
        """Send what is left, wait for the broker's acks: (messages, readings) acknowledged
        (the broker acknowledges one connection's messages in the order they were sent)."""
        self.send()
        while self.acks.acked < self.sent and time.time() < deadline and not self.acks.closed:
            time.sleep(0.005)
        self.sock.sendall(b"\xe0\x00")  # DISCONNECT
        self.sock.close()
        acked = min(self.acks.acked, self.sent)
        return acked, self.readings[acked - 1] if acked else 0


def _payload(devices: list[int], values: list[float], now: float) -> bytes:
    ts = f"{now:.6f}"
    rows = [
        f'{{"device_id":{d},"ts":{ts},"value":{v}}}' for d, v in zip(devices, values, strict=True)
    ]
    return (rows[0] if len(rows) == 1 else "[" + ",".join(rows) + "]").encode()


def publish_share(plan: PublishPlan, results: Any, start: Any = None) -> None:
    """Publish ``plan.messages`` messages, paced; put (messages, readings, seconds, CPU
    seconds of this process while publishing) on results.

    ``start``: a barrier the publisher waits at once connected and its readings drawn,
    so the bench's clock starts at the first publish, not at process start-up.

    With ``plan.premium_ids``, premium devices publish on their own connection to their
    premium topic (``.../telemetry/premium``), as devices each with a connection of their
    own would not queue behind other devices' messages; a gateway sends its premium
    devices' readings of a batch as a message of their own to its premium topic."""
    if plan.nice:
        os.nice(plan.nice)
    broker = BrokerConfig.from_url(plan.broker_url)
    plain = _Connection(broker, plan.client_id)
    premium_ids = frozenset(plan.premium_ids)
    # Premium devices' messages go out as each is built, as a device with a connection of
    # its own sends its reading when it takes it: written SEND_MESSAGES at a time, the
    # first of a send waited for the rest to be built, 100-136 ms at p99 once the niced
    # publisher was preempted mid-send, which premium's p99 counted as latency.
    fast = _Connection(broker, f"{plan.client_id}-premium", at_once=True) if premium_ids else plain
    conns = [plain] if fast is plain else [plain, fast]
    rng = np.random.default_rng(plan.seed)
    ids = np.asarray(plan.device_ids)
    pick = ids[rng.integers(0, len(ids), plan.messages * plan.per_message)].tolist()
    values = rng.normal(20.0, 2.0, len(pick)).round(3).tolist()
    window = max(1, MAX_INFLIGHT_READINGS // plan.per_message)
    group = max(1, min(SEND_MESSAGES, window, SEND_READINGS // plan.per_message))
    root = plan.topic_root
    if start is not None:
        start.wait()
    started, cpu_started = time.time(), time.process_time()
    for i in range(plan.messages):
        if i % group == 0:
            for c in conns:  # every connection's packets out before waiting on any
                c.send()
            for c in conns:
                c.wait_window(window)
            if plan.rate_mps:
                wait = started + i / plan.rate_mps - time.time()
                if wait > 0:
                    time.sleep(wait)
        # Stamped as it is published: on a shared machine a publisher that falls behind
        # its pace is starved of CPU, not held up by the pipeline; it shows as a lower rate.
        now = time.time()
        k = i * plan.per_message
        devices, vals = pick[k : k + plan.per_message], values[k : k + plan.per_message]
        if plan.per_message == 1:
            d = devices[0]
            if d in premium_ids:
                fast.add(f"{root}/devices/{d}/telemetry/premium", _payload(devices, vals, now), 1)
            else:
                plain.add(f"{root}/devices/{d}/telemetry", _payload(devices, vals, now), 1)
            continue
        gateway = f"{root}/gateways/gw{plan.seed}/telemetry"
        mine = [j for j, d in enumerate(devices) if d in premium_ids]
        if not mine:
            plain.add(gateway, _payload(devices, vals, now), len(devices))
            continue
        rest = [j for j, d in enumerate(devices) if d not in premium_ids]
        for conn, topic, part in ((fast, gateway + "/premium", mine), (plain, gateway, rest)):
            if part:
                payload = _payload([devices[j] for j in part], [vals[j] for j in part], now)
                conn.add(topic, payload, len(part))
    deadline = time.time() + 60
    acked = [c.finish(deadline) for c in conns]
    seconds, cpu_s = time.time() - started, time.process_time() - cpu_started
    results.put((sum(a[0] for a in acked), sum(a[1] for a in acked), seconds, cpu_s))
