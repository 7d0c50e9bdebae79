"""An MQTT v5 connection to a broker, from a URL: ``mqtt://[user:pass@]host[:port]``
(``mqtts://`` for TLS, port 8883 by default). Shared by the bridge and the bench."""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import numpy as np
import numpy.typing as npt
import paho.mqtt.client as mqtt
from paho.mqtt.client import PUBACK
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.exception import MalformedPacket
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from scheduler.errors import ConfigError

#: Socket reads of this many bytes feed the packet parser.
READ_CHUNK_BYTES = 256 * 1024
#: After a read that emptied the socket and held messages, the network thread waits this
#: long before it looks again, so a stream of small messages comes in fewer, larger reads:
#: each read costs a select, a recv and a hand-over of the GIL to and from the bridge loop,
#: which at 30,000 messages/s in reads of a dozen messages cost more CPU than the parsing.
#: A message waits at most this long more (the bridge's cycle is a few milliseconds).
READ_PAUSE_S = 0.002

#: One PUBLISH as the bridge takes it: (topic, payload, packet id, QoS, content type).
Received = tuple[bytes, bytes, int, int, str | None]
#: Told every PUBLISH parsed from one socket read, in arrival order.
ReceivedSink = Callable[[list[Received]], None]


class BufferedClient(mqtt.Client):
    """paho's client with a bulk read path for PUBLISH packets.

    paho 2.x reads each packet with several one-byte ``recv`` calls and one ``select``,
    builds an ``MQTTMessage`` and its properties (rebuilding paho's property tables each
    time, about 70 µs) and calls ``on_message`` under a lock: at tens of thousands of
    small messages a second that is the bridge's whole budget. Here one ``recv`` of up to
    ``READ_CHUNK_BYTES`` is cut into packets in one pass; QoS 0/1 PUBLISH packets become
    ``Received`` tuples handed to ``on_received`` in one call per read, and every other
    packet (CONNACK, SUBACK, PINGRESP, DISCONNECT, QoS 2 PUBLISH) goes to paho's own
    handler as before. Relies on paho's ``_packet_handle`` and ``_in_packet`` (pinned in
    uv.lock).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rest = b""  # the start of a packet whose end has not arrived yet
        #: Takes parsed PUBLISH packets; None hands them to paho (``on_message``).
        self.on_received: ReceivedSink | None = None
        self.read_pause_s = READ_PAUSE_S

    def reconnect(self) -> MQTTErrorCode:
        self._rest = b""  # a partial packet of the old connection is not resumed
        return super().reconnect()

    def ack_qos1(self, mids: Sequence[int] | npt.NDArray[np.int64]) -> None:
        """Acknowledge QoS 1 messages (manual ack) with one write for all of them.

        ``ack`` queues one packet and wakes the network thread once per message; here
        the PUBACKs (fixed header 0x40, length 2, message id) go as one queued packet.
        """
        if not len(mids):
            return
        packets = np.asarray(mids, dtype=np.uint32) | np.uint32(0x4002 << 16)
        self._packet_queue(PUBACK, packets.astype(">u4").tobytes(), 0, 0)

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        if self._sock is None:
            return MQTTErrorCode.MQTT_ERR_NO_CONN
        try:
            chunk = self._sock_recv(READ_CHUNK_BYTES)
        except BlockingIOError:
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        except OSError:
            return self._loop_rc_handle(MQTTErrorCode.MQTT_ERR_CONN_LOST)
        if not chunk:
            return self._loop_rc_handle(MQTTErrorCode.MQTT_ERR_CONN_LOST)
        with self._msgtime_mutex:
            self._last_bytes_received = time.monotonic()
        buf = self._rest + chunk if self._rest else chunk
        received: list[Received] = []
        take = received.append
        sink = self.on_received
        rc = MQTTErrorCode.MQTT_ERR_SUCCESS
        pos, end = 0, len(buf)
        try:
            # The usual packet (a remaining length under 128, a QoS 1 PUBLISH with no
            # properties) is cut inline: two function calls per packet were a tenth of it.
            while end - pos >= 2:
                header = buf[pos]
                length = buf[pos + 1]
                body = pos + 2
                if length & 0x80:
                    frame = _frame(buf, pos, end)
                    if frame is None:
                        break
                    body, length = frame
                stop = body + length
                if stop > end:
                    break
                if header & 0xF6 in (0x30, 0x32) and sink is not None:
                    p = body + 2 + ((buf[body] << 8) | buf[body + 1])
                    if header & 0x06 and not buf[p + 2]:  # QoS 1, no properties
                        mid = (buf[p] << 8) | buf[p + 1]
                        take((buf[body + 2 : p], buf[p + 3 : stop], mid, 1, None))
                    else:
                        take(_publish(header, buf, body, stop))
                else:
                    rc = self._handle_packet(header, buf[body:stop])
                    if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                        pos = stop
                        break
                pos = stop
        except (MalformedPacket, IndexError):  # a packet shorter than its own fields say
            rc = MQTTErrorCode.MQTT_ERR_PROTOCOL
        self._rest = buf[pos:]
        if received and sink is not None:
            sink(received)
            if len(chunk) < READ_CHUNK_BYTES and self.read_pause_s:
                # The socket is drained: let the next messages gather before reading again
                # (see READ_PAUSE_S). The lock-free pause also leaves the GIL to the bridge.
                time.sleep(self.read_pause_s)
        return self._loop_rc_handle(rc) if rc > 0 else MQTTErrorCode.MQTT_ERR_SUCCESS

    def _handle_packet(self, header: int, body: bytes) -> MQTTErrorCode:
        """One packet through paho's own handler, as its ``_packet_read`` would pass it."""
        self._in_packet = {
            "command": header,
            "have_remaining": 1,
            "remaining_count": [],
            "remaining_mult": 1,
            "remaining_length": len(body),
            "packet": bytearray(body),
            "to_process": 0,
            "pos": 0,
        }
        try:
            rc = self._packet_handle()
        except MalformedPacket:
            rc = MQTTErrorCode.MQTT_ERR_PROTOCOL
        self._in_packet["command"] = 0
        return rc


def _frame(buf: bytes, pos: int, end: int) -> tuple[int, int] | None:
    """(where the body starts, its length) of the packet at ``pos``; None until complete.
    Raises MalformedPacket on a remaining length longer than the protocol's 4 bytes."""
    length, shift, i = 0, 0, pos + 1
    while True:
        if i >= end:
            return None
        byte = buf[i]
        i += 1
        length |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
        shift += 7
        if shift > 21:
            raise MalformedPacket("remaining length over 4 bytes")
    return (i, length) if i + length <= end else None


def _publish(header: int, buf: bytes, start: int, end: int) -> Received:
    """A QoS 0/1 PUBLISH body (MQTT v5): topic, packet id, properties, payload."""
    p = start + 2 + ((buf[start] << 8) | buf[start + 1])
    topic = buf[start + 2 : p]
    mid = 0
    if header & 0x06:
        mid = (buf[p] << 8) | buf[p + 1]
        p += 2
    props_len = buf[p]  # a variable byte integer, one byte below 128
    p += 1
    if props_len & 0x80:
        props_len &= 0x7F
        shift = 7
        while True:
            byte = buf[p]
            p += 1
            props_len |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
            shift += 7
    if not props_len:
        return topic, buf[p:end], mid, header >> 1 & 0x03, None
    props = buf[p : p + props_len]
    return topic, buf[p + props_len : end], mid, header >> 1 & 0x03, _content_type(props)


def _content_type(props: bytes) -> str | None:
    """The Content Type property (0x03) of a PUBLISH property block, if any."""
    if props[0] == 0x03 and len(props) == 3 + ((props[1] << 8) | props[2]):
        return props[3:].decode("utf-8", "replace")  # the usual case: it is the only one
    parsed = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    parsed.unpack(encode_vbi(len(props)) + props)  # type: ignore[no-untyped-call]
    return getattr(parsed, "ContentType", None)


def encode_vbi(n: int) -> bytes:
    """MQTT's variable byte integer."""
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


@dataclass(frozen=True)
class BrokerConfig:
    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    #: Skip verifying the broker's certificate (a test broker with a self-signed one).
    tls_insecure: bool = False
    keepalive_s: int = 30

    @classmethod
    def from_url(cls, url: str, **options: object) -> BrokerConfig:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ConfigError(f"broker URL must be mqtt://HOST[:PORT] or mqtts://..., got {url!r}")
        tls = parts.scheme == "mqtts"
        fields: dict[str, object] = {
            "host": parts.hostname,
            "port": parts.port or (8883 if tls else 1883),
            "tls": tls,
            "username": unquote(parts.username) if parts.username else None,
            "password": unquote(parts.password) if parts.password else None,
        }
        fields.update({k: v for k, v in options.items() if v is not None})
        return cls(**fields)  # type: ignore[arg-type]


def connect(
    config: BrokerConfig,
    client_id: str,
    manual_ack: bool = False,
    clean_start: bool = True,
    session_expiry_s: int = 0,
    receive_maximum: int | None = None,
    max_inflight: int | None = None,
) -> BufferedClient:
    """A connected MQTT v5 client (network loop not started); raises ConfigError when the
    broker cannot be reached. ``max_inflight``: QoS>0 publishes awaiting the broker's ack."""
    client = BufferedClient(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5,
        manual_ack=manual_ack,
    )
    if max_inflight is not None:
        client.max_inflight_messages_set(max_inflight)
        client.max_queued_messages_set(0)
    if config.username is not None:
        client.username_pw_set(config.username, config.password)
    if config.tls:
        client.tls_set(
            ca_certs=config.ca_file,
            certfile=config.cert_file,
            keyfile=config.key_file,
            cert_reqs=ssl.CERT_NONE if config.tls_insecure else ssl.CERT_REQUIRED,
        )
        client.tls_insecure_set(config.tls_insecure)
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    if session_expiry_s:
        props.SessionExpiryInterval = session_expiry_s
    if receive_maximum:
        props.ReceiveMaximum = receive_maximum
    try:
        client.connect(
            config.host,
            config.port,
            keepalive=config.keepalive_s,
            clean_start=clean_start,
            properties=props,
        )
    except OSError as exc:
        raise ConfigError(f"cannot reach MQTT broker {config.host}:{config.port}: {exc}") from exc
    return client
