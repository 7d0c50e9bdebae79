"""An MQTT v5 connection to a broker, from a URL: ``mqtt://[user:pass@]host[:port]``
(``mqtts://`` for TLS, port 8883 by default). Shared by the bridge and the bench."""

from __future__ import annotations

import ssl
import struct
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt import _packet
from paho.mqtt.client import PUBACK
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from scheduler.errors import ConfigError

#: Socket reads of this many bytes feed paho's packet parser.
READ_CHUNK_BYTES = 256 * 1024
#: Packets parsed per readable socket, at most, before paho's loop looks at writes again.
PACKETS_PER_READ = 5_000


class PublishProperties(Properties):
    """paho's PUBLISH properties, built without rebuilding paho's property tables.

    paho builds its name and type tables on every ``Properties()`` and clears every
    known name on every ``unpack``: about 70 µs per received message here, more than the
    rest of the bridge's work on it. This shares one copy of the tables and skips the
    clearing of a fresh object; an empty property block (the usual case) costs nothing.
    """

    _template: Properties | None = None

    def __init__(self, packetType: int) -> None:
        template = PublishProperties._template
        if template is None or template.packetType != packetType:
            super().__init__(packetType)  # type: ignore[no-untyped-call]
            if packetType == PacketTypes.PUBLISH:
                PublishProperties._template = Properties(packetType)  # type: ignore[no-untyped-call]
            return
        for name in ("packetType", "types", "names", "properties"):
            object.__setattr__(self, name, getattr(template, name))

    def unpack(self, buffer: bytes) -> tuple[Properties, int]:
        if buffer[:1] == b"\x00":  # no properties: a zero length
            return self, 1
        return super().unpack(buffer)  # type: ignore[no-any-return,no-untyped-call]


def _use_publish_properties() -> None:
    """Decode received PUBLISH packets with ``PublishProperties`` (paho 2.x ``_packet``)."""
    _packet.Properties = PublishProperties  # type: ignore[attr-defined]


class BufferedClient(mqtt.Client):
    """paho's client reading the socket in large chunks.

    paho 2.x parses each packet with several one-byte ``recv`` calls and one ``select``
    per packet: at tens of thousands of small messages a second those system calls are
    the bridge's whole budget (about 4,500 messages/s on this machine). Here one ``recv``
    fills a buffer that the parser reads from, and one readable socket yields every
    packet buffered (up to ``PACKETS_PER_READ``). Relies on paho's ``_sock_recv`` and
    ``_packet_read`` (pinned in uv.lock).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rbuf = bytearray()
        _use_publish_properties()

    def _sock_recv(self, bufsize: int) -> bytes:
        if not self._rbuf:
            chunk = super()._sock_recv(READ_CHUNK_BYTES)
            if not chunk:
                return chunk  # the broker closed the connection
            self._rbuf += chunk
        out = bytes(self._rbuf[:bufsize])
        del self._rbuf[:bufsize]
        return out

    def ack_qos1(self, mids: list[int]) -> None:
        """Acknowledge QoS 1 messages (manual ack) with one write for all of them.

        ``ack`` queues one packet and wakes the network thread once per message; here
        the PUBACKs (fixed header 0x40, length 2, message id) go as one queued packet.
        """
        if not mids:
            return
        blob = struct.pack(f"!{len(mids)}I", *((0x4002 << 16) | mid for mid in mids))
        self._packet_queue(PUBACK, blob, 0, 0)

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        # Parse until the buffer and the socket are both empty, so no packet waits in the
        # buffer for a select that will not fire.
        for _ in range(PACKETS_PER_READ):
            if self._sock is None:
                return MQTTErrorCode.MQTT_ERR_NO_CONN
            rc = self._packet_read()
            if rc == MQTTErrorCode.MQTT_ERR_AGAIN:
                return MQTTErrorCode.MQTT_ERR_SUCCESS
            if rc > 0:
                return self._loop_rc_handle(rc)
        return MQTTErrorCode.MQTT_ERR_SUCCESS


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
