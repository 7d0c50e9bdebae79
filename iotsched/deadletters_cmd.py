"""``iotsched deadletters``: list, show, replay and purge rejected readings.

Replay re-offers letters through ingest, as if a device had sent them again
(for example after registering the device an ``unknown_device`` letter names).
What fails again is dead-lettered again with its new reason; the original
entries are removed only after every re-offered reading is published or
re-lettered, so a crash in between duplicates at worst, never loses.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from itertools import islice
from typing import Any

import msgpack

from iotsched.argtypes import iso_time, key_prefix_option, positive_int
from scheduler.codec import decode_batch
from scheduler.errors import InvalidBatch, IotschedError
from scheduler.settings import Settings
from stores.connection import RedisClient, connect
from stores.dead_letter_stream import DeadLetterStream, StoredLetter
from stores.keys import Keys

_REPLAY_PAGE = 500


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("deadletters", help="list, show, replay or purge dead letters")
    actions = p.add_subparsers(dest="action", required=True)

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--redis-url", help="state Redis (default: IOTSCHED_REDIS_URL)")
        key_prefix_option(q)

    ls = actions.add_parser("list", help="letters, newest last (reason, detail, source, time)")
    common(ls)
    ls.add_argument("--reason", help="only this reason (e.g. unknown_device)")
    ls.add_argument("--since", type=iso_time, help="from this ISO time on (UTC if no zone)")
    ls.add_argument("--limit", type=positive_int, default=20, help="at most this many")
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    ls.set_defaults(func=run_list)

    sh = actions.add_parser("show", help="one letter with its original payload")
    common(sh)
    sh.add_argument("letter_id", metavar="ID", help="as printed by list (e.g. 1764505200000-0)")
    sh.add_argument("--json", action="store_true")
    sh.add_argument("--raw", action="store_true", help="write only the payload bytes to stdout")
    sh.set_defaults(func=run_show)

    rp = actions.add_parser("replay", help="re-offer letters through ingest; failures go back")
    common(rp)
    rp.add_argument("--reason", help="only this reason (default: every replayable letter)")
    rp.add_argument("--json", action="store_true")
    rp.set_defaults(func=run_replay)

    pg = actions.add_parser("purge", help="drop letters written before a time")
    common(pg)
    pg.add_argument("--before", type=iso_time, required=True, help="ISO time (UTC if no zone)")
    pg.set_defaults(func=run_purge)


def _stream(args: argparse.Namespace) -> tuple[Settings, Keys, RedisClient, DeadLetterStream]:
    settings = Settings.from_env()
    keys = Keys(args.key_prefix or settings.key_prefix)
    client = connect(args.redis_url or settings.redis_url)
    return settings, keys, client, DeadLetterStream(client, keys)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _payload_text(payload: bytes) -> str | None:
    try:
        text = payload.decode()
    except UnicodeDecodeError:
        return None
    return text if text.isprintable() else None


def as_dict(stored: StoredLetter) -> dict[str, Any]:
    dl = stored.letter
    return {
        "id": stored.letter_id,
        "at": _iso(dl.at_ts),
        "reason": dl.reason,
        "detail": dl.detail,
        "source": dl.source,
        "readings": dl.readings,
        "payload_bytes": len(dl.payload),
        "payload_text": _payload_text(dl.payload),
        "payload_base64": base64.b64encode(dl.payload).decode(),
    }


def run_list(args: argparse.Namespace) -> int:
    _, _, _, stream = _stream(args)
    if args.since is not None:
        letters = list(islice(stream.scan(args.reason, args.since), args.limit))
    else:
        letters = stream.latest(args.limit, args.reason)
    for stored in letters:
        if args.json:
            print(json.dumps(as_dict(stored)))
            continue
        dl = stored.letter
        print(
            f"{stored.letter_id:<17} {_iso(dl.at_ts)}  {dl.reason:<15} {dl.source:<22}"
            f" {dl.readings:>6,}  {dl.detail[:60]}"
        )
    if not letters and not args.json:
        print("no dead letters" + (f" with reason {args.reason}" if args.reason else ""))
    return 0


def run_show(args: argparse.Namespace) -> int:
    _, _, _, stream = _stream(args)
    stored = stream.get(args.letter_id)
    if stored is None:
        raise IotschedError(f"no dead letter {args.letter_id!r}; see iotsched deadletters list")
    if args.raw:
        sys.stdout.buffer.write(stored.letter.payload)
        return 0
    d = as_dict(stored)
    if args.json:
        print(json.dumps(d, indent=2))
        return 0
    for key in ("id", "at", "reason", "detail", "source", "readings"):
        print(f"{key:<9} {d[key]}")
    print(f"payload   {d['payload_bytes']} bytes")
    print(d["payload_text"] if d["payload_text"] is not None else stored.letter.payload.hex())
    return 0


def _batch_columns(stored: StoredLetter) -> Any:
    """The readings of a letter a task wrote (a msgpack batch), or None if it holds none."""
    if stored.letter.readings <= 0:
        return None  # a screening copy: its readings were processed on the routine path
    try:
        return decode_batch(msgpack.unpackb(stored.letter.payload, raw=False))
    except (InvalidBatch, ValueError, TypeError, msgpack.UnpackException):
        return None


def run_replay(args: argparse.Namespace) -> int:
    settings, keys, client, stream = _stream(args)
    end = stream.last_id()
    done = {"letters": 0, "readings": 0, "accepted": 0, "dead_lettered_again": 0}
    again: Counter[str] = Counter()
    kept: Counter[str] = Counter()
    if end is not None:
        state_url = args.redis_url or settings.redis_url
        producer, close = _replay_producer(settings, keys, client, state_url)
        try:
            letters = stream.scan(args.reason, until_id=end)
            while page := list(islice(letters, _REPLAY_PAGE)):
                replayed = _replay_page(producer, page, again, kept, done)
                producer.flush()
                # Only now, with every re-offered reading published or re-lettered.
                stream.take_out_replayed(replayed)
        finally:
            close()
    summary = {**done, "again_by_reason": dict(again), "kept_not_replayable": dict(kept)}
    if args.json:
        print(json.dumps(summary))
        return 0
    print(
        f"replayed {done['letters']:,} letters ({done['readings']:,} readings):"
        f" {done['accepted']:,} accepted, {done['dead_lettered_again']:,} dead-lettered again"
        + (f" ({', '.join(f'{r} {n:,}' for r, n in sorted(again.items()))})" if again else "")
    )
    if kept:
        print(
            "kept (cannot be re-offered): "
            + ", ".join(f"{s} {n:,}" for s, n in sorted(kept.items()))
        )
    return 0


def _replay_page(
    producer: Any,
    page: list[StoredLetter],
    again: Counter[str],
    kept: Counter[str],
    done: dict[str, int],
) -> list[StoredLetter]:
    replayed: list[StoredLetter] = []
    singles = [s for s in page if s.letter.source == "ingest"]
    if singles:
        result = producer.ingest([s.letter.payload for s in singles])
        _tally(result, again, done)
        replayed += singles
    for stored in page:
        if stored.letter.source == "ingest":
            continue
        batch = _batch_columns(stored)
        if batch is None:
            kept[f"{stored.letter.source}/{stored.letter.reason}"] += 1
            continue
        _tally(producer.ingest_columns(batch.device_id, batch.ts, batch.values), again, done)
        replayed.append(stored)
    done["letters"] += len(replayed)
    done["readings"] += sum(s.letter.readings for s in replayed)
    return replayed


def _tally(result: Any, again: Counter[str], done: dict[str, int]) -> None:
    done["accepted"] += result.accepted
    done["dead_lettered_again"] += result.rejected
    again.update(result.reasons)


def _replay_producer(
    settings: Settings, keys: Keys, client: RedisClient, state_url: str
) -> tuple[Any, Any]:
    """A producer like ``iotsched produce`` builds, without the backlog cap: a replay is an
    operator's deliberate, bounded re-offer, and a pushed-back reading would have nowhere to go."""
    from ingest.placement import make_placer
    from ingest.producer import Producer
    from ingest.regional_publisher import RegionalPublisher
    from scheduler.validation import Limits
    from stores.inflight import InflightLedger
    from stores.redis_state import RedisStateStore
    from stores.registry_cache import RegistryCache
    from tasks.app import broker_app

    store = RedisStateStore(client, keys)
    registry = RegistryCache(store)
    placer = make_placer(
        client,
        keys,
        settings.topology,
        broker_clients={r: connect(u) for r, u in settings.region_broker_urls.items()},
    )
    # The broker is the state Redis unless IOTSCHED_BROKER_URL names another.
    app = broker_app(settings.broker_url or state_url, keys)
    publisher = RegionalPublisher.from_urls(
        app, settings.region_broker_urls, ledger=InflightLedger(client, keys)
    )
    producer = Producer(
        registry.get,
        publisher,
        store,
        limits=Limits(metrics=settings.metrics),
        producer_id=f"replay-{int(time.time())}",
        placer=placer,
    )

    def close() -> None:
        placer.close()
        publisher.close()
        app.close()

    return producer, close


def run_purge(args: argparse.Namespace) -> int:
    _, _, _, stream = _stream(args)
    removed = stream.purge(args.before)
    print(f"purged {removed:,} dead letters written before {_iso(args.before)}")
    return 0
