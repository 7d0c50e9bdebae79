"""Given rollups written by several worker processes and incidents notified, the readers
give back one merged rollup per device and minute, and each incident with its devices."""

from __future__ import annotations

import json

import fakeredis
import msgpack
import numpy as np

from alerts.stream_sink import RedisStreamSink
from scheduler.rollup import compute_rollups
from stores.incident_reader import incidents
from stores.keys import Keys
from stores.redis_state import RedisStateStore
from stores.rollup_reader import RollupReader

KEYS = Keys("readers")
MINUTE = 1_800_000_000 - 1_800_000_000 % 60


def write(
    client: fakeredis.FakeRedis, writer: str, batch: str, rows: list[tuple[int, float, float]]
) -> None:
    store = RedisStateStore(client, KEYS)
    store.writer = writer
    dev, ts, val = zip(*rows, strict=True)
    delta = compute_rollups(np.array(dev, dtype=np.uint64), np.array(ts), np.array(val)[:, None])
    store.apply_batch(batch, "premium", delta, {}, len(rows))


def test_a_devices_minutes_merge_every_writer() -> None:
    client = fakeredis.FakeRedis()
    write(client, "w1", "b1", [(7, MINUTE + 1, 1.0), (8, MINUTE + 2, 5.0), (7, MINUTE + 61, 9.0)])
    write(client, "w2", "b2", [(7, MINUTE + 30, 3.0)])
    reader = RollupReader(client, KEYS, 1)

    got = reader.device(7, MINUTE, MINUTE + 120)

    assert [m for m, _ in got] == [MINUTE, MINUTE + 60]
    first = got[0][1]
    assert (first.count, first.sum, first.min, first.max, first.last) == (
        2, (4.0,), (1.0,), (3.0,), (3.0,),
    )  # fmt: skip
    assert got[1][1].count == 1
    assert reader.device(7, MINUTE + 120, MINUTE + 600) == []


def test_a_minute_holds_every_device_once_merged_across_writers() -> None:
    client = fakeredis.FakeRedis()
    write(client, "w1", "b1", [(7, MINUTE + 1, 1.0), (8, MINUTE + 2, 5.0)])
    write(client, "w2", "b2", [(7, MINUTE + 30, 3.0)])
    reader = RollupReader(client, KEYS, 1)

    minute = reader.minute(MINUTE)

    assert minute.device_id.tolist() == [7, 8]
    assert minute.rows[:, 0].tolist() == [2.0, 1.0]  # counts
    assert reader.minutes() == [MINUTE]
    assert list(reader.closed_minutes(MINUTE + 60 + 5, grace_s=10)) == []
    assert list(reader.closed_minutes(MINUTE + 60 + 11, grace_s=10)) == [MINUTE]


def doc(inc: str, status: str, devices: list[int]) -> dict[str, object]:
    return {
        "incident_id": inc, "status": status, "severity": "warning", "group": "g",
        "region": "eu-west", "device_count": len(devices), "sample_device_ids": devices[:2],
        "first_seen_ts": 100.0, "last_seen_ts": 101.0, "cascade_id": None, "alert_count": 3,
        "kinds": {"spike": 3}, "at_ts": 102.0, "detection_latency_ms": 5.0,
    }  # fmt: skip


def test_incidents_list_open_ones_with_every_device_and_resolved_ones_with_their_sample() -> None:
    client = fakeredis.FakeRedis()
    RedisStreamSink(client, KEYS).emit(
        [doc("a", "firing", [1, 2, 3]), doc("b", "firing", [4, 5]), doc("b", "resolved", [4, 5])]
    )
    state = {"version": 1, "incidents": [{"incident_id": "a", "devices": [3, 1, 2]}]}
    client.set(KEYS.incidents("eu-west"), msgpack.packb(state))

    every = incidents(client, KEYS, ("eu-west",))
    still_open = incidents(client, KEYS, ("eu-west",), open_only=True)

    assert [(i["incident_id"], i["status"], i["open"], i["device_ids"]) for i in every] == [
        ("a", "firing", True, [1, 2, 3]),
        ("b", "resolved", False, [4, 5]),
    ]
    assert [i["incident_id"] for i in still_open] == ["a"]
    json.dumps(every)  # JSON-ready as the --json output prints it
