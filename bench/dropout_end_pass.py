"""Cost of ending a dropout pass (``DropoutStore.end_pass``) with many devices remembered.

``uv run python -m bench.dropout_end_pass [--remembered 100000 500000] [--runs 3]
[--baseline FILE]`` remembers that many devices of a region as folded into a silence
event (a tenth of them armed, ``--gone-share`` of them missed by the last two passes)
on a private redis-server, and times one ``end_pass``. ``--baseline`` names another
revision's ``stores/dropout_store.py`` (``git show REV:stores/dropout_store.py > FILE``):
its ``end_pass`` is timed on the same data, alternating with this one's.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from typing import Any

import redis

from bench.redis_server import private_redis
from stores.dropout_store import RedisDropoutStore
from stores.keys import Keys

REGION = "eu-west"
PASS_NO = 10
#: Members per ZADD when the bench fills the sets.
FILL_CHUNK = 10_000


def remember(client: Any, keys: Keys, n: int, gone_share: float) -> None:
    """``n`` devices remembered as folded, found by the ending pass except ``gone_share``."""
    client.delete(
        *(f(REGION) for f in (keys.dropout_folded, keys.dropout_armed, keys.dropout_found))
    )
    gone_every = max(1, round(1 / gone_share)) if gone_share > 0 else n + 1
    for lo in range(0, n, FILL_CHUNK):
        ids = range(lo + 1, min(n, lo + FILL_CHUNK) + 1)
        pipe = client.pipeline(transaction=False)
        pipe.zadd(keys.dropout_folded(REGION), dict.fromkeys(ids, 1_700_000_000.0))
        pipe.zadd(keys.dropout_armed(REGION), {d: 1_700_000_100.0 for d in ids if d % 10 == 0})
        found = {d: PASS_NO - 2 if d % gone_every == 0 else PASS_NO for d in ids}
        pipe.zadd(keys.dropout_found(REGION), found)
        pipe.execute()


def load_store_class(path: str) -> Any:
    spec = importlib.util.spec_from_file_location("baseline_dropout_store", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module.RedisDropoutStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--remembered", type=int, nargs="+", default=[100_000, 500_000])
    parser.add_argument("--gone-share", type=float, default=0.01)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--baseline", help="another revision's stores/dropout_store.py")
    parser.add_argument("--redis-url", help="an existing Redis (default: a private one)")
    args = parser.parse_args()
    keys = Keys("bench-end-pass")
    stores: list[tuple[str, Any]] = [("this", RedisDropoutStore)]
    if args.baseline:
        stores.insert(0, ("baseline", load_store_class(args.baseline)))
    with private_redis(args.redis_url) as url:
        client = redis.Redis.from_url(url)
        for n in args.remembered:
            for run in range(args.runs):
                for name, cls in stores:
                    remember(client, keys, n, args.gone_share)
                    store = cls(client, keys)
                    started = time.perf_counter()
                    gone = store.end_pass(REGION, PASS_NO, 1_700_000_200.0)
                    took_s = time.perf_counter() - started
                    run_name = f"{name:8} remembered {n} run {run + 1}"
                    print(f"{run_name}: end_pass {took_s:.3f} s, forgot {gone}")
        client.flushdb()


if __name__ == "__main__":
    main()
