"""What a WATCH of many keys costs the redis-server, against an MGET of the same keys.

    uv run python -m bench.watch_cost [--keys 100 1000 5000] [--rounds 5]

Prints one JSON object: per key count, the redis-server's CPU milliseconds for one
WATCH of that many keys (with its UNWATCH) and for one MGET of them. Redis 7.0 checks
each key a WATCH adds against every key the connection already watches, so the WATCH
grows with the square of the keys: why a screening commit watches one write counter
rather than its batch's device keys (``stores.detector_store``).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import redis

from bench.redis_server import private_redis


def _server_cpu_s(client: Any) -> float:
    info: Any = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def measure(url: str, key_counts: list[int], rounds: int) -> dict[str, Any]:
    client: Any = redis.Redis.from_url(url)  # execute_command is untyped in redis-py
    out: dict[str, Any] = {"redis_version": client.info("server")["redis_version"]}
    for n in key_counts:
        keys = [f"bench-watch:{i}" for i in range(n)]
        client.mset(dict.fromkeys(keys, b"x" * 200))
        with client.pipeline(transaction=False) as pipe:
            start = _server_cpu_s(client)
            for _ in range(rounds):
                pipe.execute_command("WATCH", *keys)
                pipe.execute_command("UNWATCH")
                pipe.execute()
            watch_ms = (_server_cpu_s(client) - start) / rounds * 1e3
        start = _server_cpu_s(client)
        for _ in range(rounds):
            client.execute_command("MGET", *keys)
        mget_ms = (_server_cpu_s(client) - start) / rounds * 1e3
        client.delete(*keys)
        out[str(n)] = {
            "watch_server_cpu_ms": round(watch_ms, 2),
            "mget_server_cpu_ms": round(mget_ms, 2),
        }
    client.close()
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, nargs="+", default=[100, 1_000, 5_000])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with private_redis() as url:
        print(json.dumps(measure(url, args.keys, args.rounds), indent=2))
