"""Redis clients for the command line and producers, built from a URL.

The command line imports no Redis client library (an import-linter contract): it
connects, names the client type and recognises Redis errors through this module.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import redis

#: A connected client, as the stores take it.
RedisClient: TypeAlias = redis.Redis

RedisError = redis.RedisError
AuthenticationError = redis.AuthenticationError
ResponseError = redis.ResponseError
#: The server could not be reached, or stopped answering.
UNREACHABLE_ERRORS: tuple[type[redis.RedisError], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
)


def connect(url: str, **options: Any) -> RedisClient:
    """A client for ``url`` (``redis://``, ``rediss://`` or ``unix://``); connects lazily."""
    return redis.Redis.from_url(url, **options)
