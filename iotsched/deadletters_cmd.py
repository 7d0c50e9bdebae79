"""``iotsched deadletters``: list, show, replay and purge rejected readings.

Replay (``ingest.letter_replay``) re-offers letters through ingest, as if their
devices had sent them again, on the same wiring as ``iotsched produce`` but without
admission control: a replay is an operator's deliberate, bounded re-offer.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from itertools import islice
from typing import Any

from iotsched.argtypes import iso_time, key_prefix_option, positive_int
from scheduler.errors import IotschedError
from scheduler.settings import Settings
from stores.connection import RedisClient, connect
from stores.dead_letter_stream import DeadLetterStream, StoredLetter
from stores.keys import Keys


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


def run_replay(args: argparse.Namespace) -> int:
    # Imported here: they build the producer's wiring, which list/show/purge never need.
    from ingest.letter_replay import ReplaySummary, replay_letters
    from iotsched.producer_wiring import wire_producer
    from tasks.app import broker_app

    settings, keys, client, stream = _stream(args)
    summary = ReplaySummary()
    if stream.last_id() is not None:
        settings = replace(
            settings, redis_url=args.redis_url or settings.redis_url, key_prefix=keys.prefix
        )
        app = broker_app(settings.effective_broker_url, keys)
        wiring = wire_producer(settings, app, client)
        try:
            producer = wiring.producer(f"replay-{int(time.time())}", admission=False)
            summary = replay_letters(producer, stream, args.reason)
        finally:
            wiring.close()
            app.close()
    if args.json:
        print(json.dumps(summary.as_dict()))
        return 0
    again = summary.again_by_reason
    print(
        f"replayed {summary.letters:,} letters ({summary.readings:,} readings):"
        f" {summary.accepted:,} accepted, {summary.dead_lettered_again:,} dead-lettered again"
        + (f" ({', '.join(f'{r} {n:,}' for r, n in sorted(again.items()))})" if again else "")
    )
    if summary.kept_not_replayable:
        kept = sorted(summary.kept_not_replayable.items())
        print("kept (cannot be re-offered): " + ", ".join(f"{s} {n:,}" for s, n in kept))
    return 0


def run_purge(args: argparse.Namespace) -> int:
    _, _, _, stream = _stream(args)
    removed = stream.purge(args.before)
    print(f"purged {removed:,} dead letters written before {_iso(args.before)}")
    return 0
