"""CPU per message of the MQTT bridge's own steps, without a broker, Redis or workers.

``python -m bench.bridge_cpu`` feeds the bytes a broker sends a bridge (single JSON
readings, as ``mqtt-bench`` publishes them) through the steps the bridge takes before
ingest: the client cuts socket reads into PUBLISH messages and notes their arrival, the
inbox takes premium devices' first, the decoder turns runs of messages into columns, and
the acks go out in arrival order. It prints the CPU microseconds per message of each step
(the least of ``--repeat`` runs): the part of ``mqtt-bench``'s
``bridge_cpu_us_per_reading`` that is the bridge's and not the producer's, measured
without the noise of a shared machine's other processes.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from bench.mqtt_devices import publish_packet
from ingest.mqtt_acks import Acks
from ingest.mqtt_client import BufferedClient, Received
from ingest.mqtt_inbox import Inbox, runs
from ingest.mqtt_options import CYCLE_BYTES, CYCLE_MESSAGES, RUN_BYTES, RUN_MESSAGES
from ingest.mqtt_payload import decode_messages
from scheduler.registry import Registry, generate_registry
from scheduler.validation import Limits

NOW_TS = 1_800_000_000.0


class _Socket:
    """Hands out a byte stream in reads of ``read_bytes``, as a socket would."""

    def __init__(self, stream: bytes, read_bytes: int) -> None:
        self.stream = memoryview(stream)
        self.read_bytes = read_bytes
        self.pos = 0

    def recv(self, bufsize: int) -> bytes:
        if self.pos >= len(self.stream):
            raise BlockingIOError
        end = self.pos + min(bufsize, self.read_bytes)
        piece = bytes(self.stream[self.pos : end])
        self.pos = end
        return piece

    def close(self) -> None:
        self.pos = len(self.stream)


def stream_of(registry: Registry, messages: int, seed: int) -> bytes:
    """``messages`` single readings of random devices, as PUBLISH packets at QoS 1."""
    rng = np.random.default_rng(seed)
    ids = registry.device_id[rng.integers(0, len(registry), messages)].tolist()
    values = rng.normal(20.0, 2.0, messages).round(3).tolist()
    root = "mqttbench-12345-abcdef"
    return b"".join(
        publish_packet(
            f"{root}/devices/{d}/telemetry",
            f'{{"device_id":{d},"ts":{NOW_TS + i / 1e4:.6f},"value":{v}}}'.encode(),
            i % 65_535 + 1,
        )
        for i, (d, v) in enumerate(zip(ids, values, strict=True))
    )


def run_once(stream: bytes, registry: Registry, read_bytes: int) -> dict[str, float]:
    """CPU seconds of each step for one pass over ``stream``."""
    spent = {"parse": 0.0, "inbox": 0.0, "decode": 0.0, "acks": 0.0}
    acks = Acks()
    inbox = Inbox(lambda: registry)
    client = BufferedClient(callback_api_version=CallbackAPIVersion.VERSION2)
    client._sock = _Socket(stream, read_bytes)  # type: ignore[assignment]
    client.read_pause_s = 0.0  # the reads are all there: a pause would only cool the caches
    client._packet_queue = lambda *a, **k: MQTTErrorCode.MQTT_ERR_SUCCESS  # type: ignore[method-assign]

    def arrived(received: list[Received]) -> None:  # as the receiver's plain lane
        acks.arrived(received)
        inbox.put(received)

    client.on_received = arrived
    limits = Limits()
    clock = time.process_time
    sock: Any = client._sock
    while sock.pos < len(sock.stream) or inbox:
        t0 = clock()
        for _ in range(8):  # a few reads arrive per bridge cycle
            client.loop_read()
        t1 = clock()
        taken = inbox.take(CYCLE_MESSAGES, CYCLE_BYTES)
        t2 = clock()
        for run in runs(taken, RUN_MESSAGES, RUN_BYTES):
            decode_messages(run, limits, NOW_TS)
        t3 = clock()
        acks.add([(m[2], m[3]) for m in taken])
        acks.send(client)
        t4 = clock()
        spent["parse"] += t1 - t0
        spent["inbox"] += t2 - t1
        spent["decode"] += t3 - t2
        spent["acks"] += t4 - t3
    return spent


def measure(messages: int, read_bytes: int, repeat: int, seed: int = 0) -> dict[str, Any]:
    registry = generate_registry(20_000, seed=seed)
    stream = stream_of(registry, messages, seed)
    runs = [run_once(stream, registry, read_bytes) for _ in range(repeat)]
    best: Callable[[str], float] = lambda step: min(r[step] for r in runs)  # noqa: E731
    per_message = {step: round(best(step) / messages * 1e6, 3) for step in runs[0]}
    total = round(min(sum(r.values()) for r in runs) / messages * 1e6, 3)
    return {
        "messages": messages,
        "read_bytes": read_bytes,
        "cpu_us_per_message": per_message,
        "total_cpu_us_per_message": total,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--messages", type=int, default=200_000)
    p.add_argument("--read-bytes", type=int, default=16 * 1024, help="bytes per socket read")
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    print(json.dumps(measure(args.messages, args.read_bytes, args.repeat)))


if __name__ == "__main__":
    main()
