"""``iotsched registry generate|load|export|show``: the device registry in Redis."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from iotsched.argtypes import key_prefix_option, non_negative_int, positive_int, share
from scheduler.errors import ConfigError
from scheduler.registry import generate_registry, registry_from_csv, registry_to_csv
from scheduler.settings import Settings
from stores.keys import Keys
from stores.redis_state import RedisStateStore


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("registry", help="generate, load, export or show the device registry")
    p.add_argument("--redis-url", help="Redis to use (default IOTSCHED_REDIS_URL)")
    key_prefix_option(p)
    actions = p.add_subparsers(dest="action", required=True)
    g = actions.add_parser("generate", help="store a synthetic fleet")
    ld = actions.add_parser("load", help="store a registry from CSV")
    ex = actions.add_parser("export", help="write the stored registry as CSV to stdout")
    sh = actions.add_parser("show", help="summarise the stored registry")
    for q in (g, ld, ex, sh):
        # Also after the action, like every other command; SUPPRESS keeps a value given before.
        q.add_argument("--redis-url", default=argparse.SUPPRESS, help="as above")
        q.add_argument("--key-prefix", default=argparse.SUPPRESS, help="as above")
    g.add_argument("--devices", type=positive_int, default=1_000_000)
    g.add_argument("--seed", type=non_negative_int, default=0)
    g.add_argument("--premium-share", type=share, default=0.2)
    g.add_argument("--resident-share", type=share, default=0.1, help="share region-locked")
    ld.add_argument("file", type=Path)
    ex.set_defaults(limit=None)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    url = args.redis_url or settings.redis_url
    store = RedisStateStore.from_url(url, Keys(args.key_prefix or settings.key_prefix))
    if args.action == "generate":
        if args.devices <= 0:
            raise ConfigError("--devices must be positive")
        t0 = time.perf_counter()
        reg = generate_registry(
            args.devices,
            seed=args.seed,
            topology=settings.topology,
            premium_share=args.premium_share,
            resident_share=args.resident_share,
        )
        version = store.save_registry(reg)
        print(
            f"stored {len(reg):,} devices as version {version} in {time.perf_counter() - t0:.2f} s"
        )
        return 0
    if args.action == "load":
        if not args.file.exists():
            raise ConfigError(f"no such file: {args.file}")
        with args.file.open(newline="") as fh:
            reg = registry_from_csv(fh, settings.topology)
        version = store.save_registry(reg)
        print(f"stored {len(reg):,} devices from {args.file} as version {version}")
        return 0
    stored = store.load_registry()
    if stored is None:
        raise ConfigError("no registry stored yet: run `iotsched registry generate` first")
    reg = stored
    if args.action == "export":
        sys.stdout.write(registry_to_csv(reg))
        return 0
    print(f"version {reg.version}: {len(reg):,} devices")
    for code, tier in enumerate(reg.topology.tiers):
        print(f"  tier {tier:<10} {int(np.sum(reg.tier == code)):>10,}")
    for code, region in enumerate(reg.topology.regions):
        locked = int(np.sum((reg.home_region == code) & (reg.allowed_mask == 1 << code)))
        n = int(np.sum(reg.home_region == code))
        print(f"  home {region:<10} {n:>10,}   region-locked {locked:,}")
    return 0
