"""``iotsched deadletters`` on a real Redis: find a letter, fix its cause, replay, purge."""

from __future__ import annotations

import json
import time

import msgpack
import numpy as np
import pytest
import redis

from iotsched.cli import main
from scheduler.codec import encode_batch
from scheduler.model import Batch, DeadLetter
from scheduler.registry import generate_registry
from scheduler.settings import Settings
from stores.dead_letter_stream import DeadLetterStream
from stores.keys import Keys
from stores.queue_depth import queue_depths
from stores.redis_state import RedisStateStore
from workers.profiles import region_queues

pytestmark = pytest.mark.integration


def _reading(device_id: int, now: float) -> bytes:
    return f'{{"device_id": {device_id},  "ts": {now}, "value": 1.5}}'.encode()


def _cli(url: str, prefix: str, *argv: str) -> int:
    return main(["deadletters", *argv, "--redis-url", url, "--key-prefix", prefix])


def test_replay_after_registering_the_device(
    redis_server: str, key_prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    client = redis.Redis.from_url(redis_server)
    keys = Keys(key_prefix)
    store = RedisStateStore(client, keys)
    store.save_registry(generate_registry(100, seed=1))
    now = time.time()
    # Given letters of every kind: an unknown device (whose cause will be fixed), a reading
    # that is still malformed, a batch a task gave up on, and a screening copy
    unknown = _reading(150, now)
    batch = Batch(
        batch_id="b1",
        region="eu-west",
        tier="standard",
        metrics=("value",),
        device_id=np.array([3, 4], dtype=np.uint64),
        ts=np.array([now, now]),
        values=np.ones((2, 1)),
        ingest_ts=np.array([now, now]),
    )
    packed = msgpack.packb(encode_batch(batch), use_bin_type=True)
    store.add_dead_letters(
        [
            DeadLetter(
                "unknown_device", "device 150 is not in the registry", unknown, "ingest", now
            ),
            DeadLetter("malformed", "Expecting value", b"not json", "ingest", now),
            DeadLetter("retries_exhausted", "redis down", packed, "iotsched.routine", now, 2),
            DeadLetter("screen_failed", "boom", packed, "iotsched.screen", now, 0),
        ]
    )
    # When the operator lists them as JSON
    assert _cli(redis_server, key_prefix, "list", "--json") == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    # Then each shows its reason, detail and the original bytes
    assert [d["reason"] for d in listed] == [
        "unknown_device",
        "malformed",
        "retries_exhausted",
        "screen_failed",
    ]
    assert listed[0]["payload_text"] == unknown.decode()
    assert _cli(redis_server, key_prefix, "show", listed[0]["id"], "--raw") == 0
    assert capsys.readouterr().out == unknown.decode()

    # When device 150 is registered and every letter is replayed
    store.save_registry(generate_registry(200, seed=1))
    assert _cli(redis_server, key_prefix, "replay", "--json") == 0
    summary = json.loads(capsys.readouterr().out)

    # Then the unknown device and the batch's two readings are re-offered and published,
    # the malformed reading goes back with its reason, the screening copy stays
    assert summary["letters"] == 3 and summary["readings"] == 4
    assert summary["accepted"] == 3 and summary["dead_lettered_again"] == 1
    assert summary["again_by_reason"] == {"malformed": 1}
    assert summary["kept_not_replayable"] == {"iotsched.screen/screen_failed": 1}
    queues = [q for r in Settings().regions for q in region_queues(r, "data")]
    assert sum(queue_depths(client, keys, [q for q in queues if "screen" not in q]).values()) > 0
    left = list(DeadLetterStream(client, keys).scan())
    assert sorted(s.letter.reason for s in left) == ["malformed", "screen_failed"]
    # And the counters reconcile: the 4 replayed readings were offered again, 3 accepted
    # and 1 dead-lettered; the stream holds that 1 plus the copy (0 readings)
    c = store.counters()
    assert c["replayed_readings"] == c["ingested"] == 4
    assert (c["accepted"], c["dead_lettered"], c["dead_lettered:malformed"]) == (3, 1, 1)

    # When letters before now are purged
    assert _cli(redis_server, key_prefix, "purge", "--before", "2999-01-01T00:00:00") == 0
    assert "purged 2 dead letters" in capsys.readouterr().out
    assert list(DeadLetterStream(client, keys).scan()) == []


def test_show_unknown_id_is_one_line(
    redis_server: str, key_prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _cli(redis_server, key_prefix, "show", "1-0") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["iotsched deadletters: no dead letter '1-0'; see iotsched deadletters list"]
