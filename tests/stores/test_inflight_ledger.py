"""Given batches in flight, the ledger hands back exactly the overdue ones, once per grace."""

from __future__ import annotations

import fakeredis

from stores.inflight import InflightLedger
from stores.keys import Keys


def test_only_batches_not_done_past_the_grace_come_back_and_their_clock_restarts() -> None:
    ledger = InflightLedger(fakeredis.FakeRedis(), Keys("l"))
    ledger.record("a", "eu-west.standard", {"id": "a", "n": 3}, "iotsched.routine", now_ts=100.0)
    ledger.record("b", "eu-west.premium", {"id": "b", "n": 1}, "iotsched.routine", now_ts=100.0)
    ledger.record("c", "eu-west.screen", {"id": "c", "n": 2}, "iotsched.screen", now_ts=108.0)
    ledger.done("b")
    # At 110 with a 5 s grace only "a" is overdue ("b" is done, "c" is recent)
    due = ledger.overdue(now_ts=110.0, grace_s=5.0)
    assert [(d.batch_id, d.queue, d.payload, d.task) for d in due] == [
        ("a", "eu-west.standard", {"id": "a", "n": 3}, "iotsched.routine")
    ]
    # Handed back once, it is not handed back again until another grace has passed
    assert ledger.overdue(now_ts=112.0, grace_s=5.0) == []
    assert sorted(d.batch_id for d in ledger.overdue(now_ts=116.0, grace_s=5.0)) == ["a", "c"]
    assert ledger.size() == 2


def test_one_reaper_leads_at_a_time_and_keeps_its_lease() -> None:
    client = fakeredis.FakeRedis()
    first, second = InflightLedger(client, Keys("l")), InflightLedger(client, Keys("l"))
    assert first.try_lead("w1", ttl_s=3)
    assert not second.try_lead("w2", ttl_s=3)
    assert first.try_lead("w1", ttl_s=3)


def test_batches_of_a_queue_still_holding_messages_are_left_to_wait() -> None:
    ledger = InflightLedger(fakeredis.FakeRedis(), Keys("l"))
    ledger.record("a", "eu-west.standard", {"id": "a"}, "iotsched.routine", now_ts=100.0)
    ledger.record("b", "us-east.standard", {"id": "b"}, "iotsched.routine", now_ts=100.0)
    # When eu-west.standard still has a backlog, only the other queue's batch comes back
    due = ledger.overdue(110.0, 5.0, skip_queues=lambda qs: qs & {"eu-west.standard"})
    assert [d.batch_id for d in due] == ["b"]
    # And the waiting one is looked at again next time, not pushed a grace further
    assert [d.batch_id for d in ledger.overdue(111.0, 5.0)] == ["a"]
