"""Given an intake offering runs of MQTT messages to a producer: a message whose readings
were all taken is due for acknowledgement at once; one with readings ingest pushed back is
acknowledged only once the cycle's parking write succeeded, and stays held, unacknowledged,
while the write fails, until its region takes readings again."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

import numpy as np
import redis
from mqtt_publishing import Recorder

from ingest.mqtt_client import Received
from ingest.mqtt_intake import Intake
from ingest.mqtt_parking import Parking
from ingest.producer import Producer
from scheduler.registry import generate_registry
from stores.memory_state import MemoryStateStore
from stores.parked_readings import MemoryParkedReadings, ParkedBatch

REG = generate_registry(2_000, seed=3)
REGIONS = REG.topology.regions
PREMIUM = [int(d) for d in REG.device_id[REG.tier == 0][:20]]
STANDARD = [int(d) for d in REG.device_id[REG.tier > 0][:30]]


def messages(device_ids: list[int]) -> list[Received]:
    return [
        (
            b"t/devices/%d/telemetry" % d,
            json.dumps({"device_id": d, "ts": time.time(), "value": 1.0}).encode(),
            i + 1,
            1,
            None,
        )
        for i, d in enumerate(device_ids)
    ]


class DownParking(MemoryParkedReadings):
    """A parked-readings store Redis cannot write to."""

    def park(self, batches: Sequence[ParkedBatch]) -> None:
        raise redis.ConnectionError("down")


def intake_with(parked: MemoryParkedReadings) -> tuple[Intake, Recorder, list[int], np.ndarray]:
    """An intake whose producer has every region closed to non-premium readings."""
    closed = np.ones(len(REGIONS), dtype=bool)
    pub = Recorder()
    producer = Producer(lambda: REG, pub, MemoryStateStore(), backlog_gate=lambda: closed)
    acked: list[int] = []
    intake = Intake(
        producer,
        lambda due: acked.extend(mid for mid, _qos in due),
        time.time,
        lambda: REG,
        Parking(parked, "bridge-1", REGIONS),
    )
    return intake, pub, acked, closed


def test_messages_whose_readings_were_all_taken_are_due_at_once_and_the_rest_after_parking() -> (
    None
):
    # Given an intake whose regions push back standard readings
    parked = MemoryParkedReadings()
    intake, pub, acked, _closed = intake_with(parked)
    premium, standard = messages(PREMIUM), messages(STANDARD)
    # When it offers a run of premium single readings
    intake.offer(premium)
    intake.producer.flush()
    # Then their messages are due for acknowledgement and their readings published
    assert sorted(acked) == list(range(1, len(PREMIUM) + 1))
    assert sorted(pub.device_ids()) == sorted(PREMIUM)
    # And when it offers a run of standard ones, ingest pushes them back: their messages
    # are due only once the cycle's parking write took their readings
    acked.clear()
    intake.offer(standard)
    assert acked == []
    intake.park_pending(time.time())
    assert sorted(acked) == list(range(1, len(STANDARD) + 1))
    assert intake.parking is not None and intake.parking.parked == len(STANDARD)
    assert sum(parked.waiting(REGIONS).values()) > 0
    assert not intake.held


def test_pushed_back_readings_stay_held_unacknowledged_while_parking_fails() -> None:
    # Given an intake whose parking write fails and whose regions push back standard readings
    intake, pub, acked, closed = intake_with(DownParking())
    # When it offers standard readings and tries to park them
    intake.offer(messages(STANDARD))
    intake.park_pending(time.time())
    # Then their messages are held, not acknowledged
    assert acked == []
    assert intake.held
    # And once their regions take readings, they are offered again and acknowledged
    closed[:] = False
    intake.offer_held(time.time())
    intake.producer.flush()
    assert sorted(acked) == list(range(1, len(STANDARD) + 1))
    assert sorted(pub.device_ids()) == sorted(STANDARD)
    assert not intake.held
