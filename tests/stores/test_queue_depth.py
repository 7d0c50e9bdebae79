"""Queue depth over kombu's priority lists, read in one round trip with the counters."""

from __future__ import annotations

from typing import Any

import fakeredis
import pytest
from kombu.transport.redis import PRIORITY_STEPS, Channel

from stores.keys import Keys
from stores.queue_depth import QueueDepthReader

KEYS = Keys("t")
Q = "eu-west.standard"


class _KombuNames:
    """Just enough of kombu's Redis Channel to run its own ``_q_for_pri``."""

    sep = Channel.sep
    priority_steps = PRIORITY_STEPS
    priority = Channel.priority
    _q_for_pri = Channel._q_for_pri


class _PipelineOnly:
    """A client that only hands out pipelines, and counts the round trips."""

    def __init__(self, client: fakeredis.FakeRedis) -> None:
        self._client = client
        self.round_trips = 0

    def pipeline(self, transaction: bool = True) -> Any:
        pipe = self._client.pipeline(transaction=transaction)
        execute = pipe.execute

        def counted() -> Any:
            self.round_trips += 1
            return execute()

        pipe.execute = counted  # type: ignore[method-assign]
        return pipe


def _push(client: fakeredis.FakeRedis, key: str, n: int) -> None:
    if n:
        client.lpush(key, *[b"{}"] * n)


def test_every_list_kombu_writes_for_a_queue_is_counted() -> None:
    # Given kombu's own naming of a queue's list for every priority 0..9
    names = {_KombuNames()._q_for_pri(Q, pri) for pri in range(10)}
    # Then the keys module names exactly those lists, under the broker prefix
    assert {KEYS.broker_prefix + n for n in names} == set(KEYS.broker_queue_lists(Q))


@pytest.mark.parametrize(
    ("per_list", "expected"),
    [
        ((0, 0, 0, 0), 0),
        ((5, 0, 0, 0), 5),
        ((3, 2, 0, 1), 6),
        ((1, 1, 1, 1), 4),
    ],
)
def test_depth_sums_a_queues_priority_lists(per_list: tuple[int, ...], expected: int) -> None:
    # Given messages spread over the queue's priority lists, and another deployment's queue
    client = fakeredis.FakeRedis()
    for key, n in zip(KEYS.broker_queue_lists(Q), per_list, strict=True):
        _push(client, key, n)
    _push(client, Keys("other").broker_queue_lists(Q)[0], 7)
    # When the depth is sampled
    sample = QueueDepthReader(client, KEYS).sample([Q, "eu-west.premium"])
    # Then only this deployment's lists of this queue count
    assert sample.depth == {Q: expected, "eu-west.premium": 0}


def test_a_sample_is_one_round_trip_and_adds_what_was_taken() -> None:
    # Given a queue with a backlog and the counters the data path keeps
    client = fakeredis.FakeRedis()
    _push(client, KEYS.broker_queue_lists(Q)[0], 4)
    client.hset(
        KEYS.counters,
        mapping={"ingested": 9000, "processed:standard": 6000, "batches:standard": 3},
    )
    counting = _PipelineOnly(client)
    reader = QueueDepthReader(counting, KEYS)  # type: ignore[arg-type]
    # When two samples report messages this worker took
    reader.sample([Q], taken_delta={Q: 2})
    sample = reader.sample([Q], taken_delta={Q: 3})
    # Then each sample cost one round trip, and the taken counts accumulate
    assert counting.round_trips == 2
    assert sample.taken == {Q: 5}
    assert sample.ingested == 9000
    # And readings waiting are estimated from the mean batch processed so far
    assert sample.readings_per_message == {"standard": 2000.0}
    assert sample.depth_readings(Q) == 8000.0
    assert sample.depth_readings("eu-west.premium") is None
