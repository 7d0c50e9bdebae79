"""``iotsched incidents``: incidents with their devices (open ones from the correlators,
all from the alert stream)."""

from __future__ import annotations

import argparse
import json
import time

from alerts.alertmanager_sink import AlertmanagerSink
from iotsched.argtypes import positive_float
from iotsched.rollups_cmd import add_redis_options, connect, iso
from stores.incident_reader import incidents


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("incidents", help="incidents and their devices")
    p.add_argument("--open", action="store_true", help="only incidents still open")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument(
        "--alertmanager-url",
        help="post the open incidents to this Alertmanager (keeps them firing after a restart)",
    )
    p.add_argument("--every-s", type=positive_float, help="with --alertmanager-url: repeat")
    add_redis_options(p)
    p.set_defaults(func=run)


def _keep_firing(args: argparse.Namespace) -> int:
    client, keys, settings = connect(args)
    sink = AlertmanagerSink(args.alertmanager_url)
    while True:
        found = incidents(client, keys, settings.regions, open_only=True)
        sink.repost([{**d, "status": "firing"} for d in found])
        print(f"posted {len(found)} open incidents to {sink.url}", flush=True)
        if not args.every_s:
            return 0
        time.sleep(args.every_s)


def run(args: argparse.Namespace) -> int:
    if args.alertmanager_url:
        return _keep_firing(args)
    client, keys, settings = connect(args)
    found = incidents(client, keys, settings.regions, open_only=args.open)
    for inc in found:
        if args.json:
            print(json.dumps(inc, sort_keys=True))
            continue
        devices = ",".join(map(str, inc["device_ids"][:10]))
        more = f" (+{len(inc['device_ids']) - 10})" if len(inc["device_ids"]) > 10 else ""
        print(
            f"{inc['incident_id']}  {inc['status']:<8} {inc.get('severity', '-'):<8} "
            f"{inc['region']:<9} group {inc['group']:<6} first {iso(inc['first_seen_ts'])}  "
            f"{inc['device_count']} devices: {devices}{more}"
        )
    if not found and not args.json:
        print("no open incidents" if args.open else "no incidents")
    return 0
