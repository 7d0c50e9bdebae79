"""One line for every failure an operator can fix: what failed, and what to do.

``iotsched`` never shows a traceback unless ``--debug`` is given: connection,
configuration and input errors become one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import os
import re
from urllib.parse import urlsplit, urlunsplit

from kombu.exceptions import OperationalError

from scheduler.errors import ConfigError, IotschedError
from scheduler.settings import Settings
from stores.connection import (
    UNREACHABLE_ERRORS,
    AuthenticationError,
    RedisError,
    ResponseError,
)

#: Exit status for a runtime failure (Redis away) and for bad configuration or input.
EXIT_RUNTIME = 1
EXIT_USAGE = 2

_URL_IN_TEXT = re.compile(r"\b(?:rediss?|unix)://\S+")


def redact(url: str) -> str:
    """The URL with its password (if any) replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def _has_password(url: str) -> bool:
    try:
        return urlsplit(url).password is not None
    except ValueError:
        return False


def configured_redis_url(explicit: str | None) -> str:
    """The URL a command used: its ``--redis-url``, else IOTSCHED_REDIS_URL, else the default."""
    return explicit or os.environ.get("IOTSCHED_REDIS_URL") or Settings.redis_url


def _why(exc: BaseException) -> str:
    text = str(exc)
    lowered = text.lower()
    for needle, why in (
        ("refused", "connection refused"),
        ("timed out", "timed out"),
        ("timeout", "timed out"),
        ("name or service not known", "host not found"),
        ("nodename nor servname", "host not found"),
        ("temporary failure in name resolution", "host not found"),
        ("no such file", "no such socket"),
        ("ssl", "TLS handshake failed"),
    ):
        if needle in lowered:
            return why
    return (
        _URL_IN_TEXT.sub(lambda m: redact(m.group(0)), text.strip().rstrip("."))
        or type(exc).__name__
    )


def _root(exc: BaseException) -> BaseException:
    """kombu wraps a Redis error in OperationalError; the cause says what really failed."""
    while isinstance(exc, OperationalError) and exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


def describe(exc: BaseException, redis_url: str) -> tuple[str, int]:
    """(one-line message, exit status) for an exception that ended a command."""
    url = redact(redis_url)
    exc = _root(exc)
    if isinstance(exc, AuthenticationError) or (
        isinstance(exc, ResponseError) and str(exc).startswith(("NOAUTH", "WRONGPASS"))
    ):
        # Without a password Redis answers with a long protocol message; say what is missing.
        why = _why(exc) if _has_password(redis_url) else "the URL has no password"
        return (
            f"Redis at {url} refused the credentials ({why}); "
            "set the user and password in IOTSCHED_REDIS_URL",
            EXIT_RUNTIME,
        )
    if isinstance(exc, (*UNREACHABLE_ERRORS, OperationalError)):
        return f"cannot reach Redis at {url} ({_why(exc)}); set IOTSCHED_REDIS_URL", EXIT_RUNTIME
    if isinstance(exc, ConnectionError | TimeoutError):
        return f"cannot reach Redis at {url} ({_why(exc)}); set IOTSCHED_REDIS_URL", EXIT_RUNTIME
    if isinstance(exc, RedisError):
        return f"Redis at {url} answered with an error: {_why(exc)}", EXIT_RUNTIME
    if isinstance(exc, ValueError) and "Redis URL must specify" in str(exc):
        return (
            f"invalid Redis URL {url!r} (expected redis://, rediss:// or unix://); "
            "set IOTSCHED_REDIS_URL",
            EXIT_USAGE,
        )
    if isinstance(exc, ConfigError):
        return f"configuration: {exc}", EXIT_USAGE
    if isinstance(exc, IotschedError):
        return str(exc), EXIT_USAGE
    if isinstance(exc, UnicodeDecodeError):
        return (
            f"input is not UTF-8 text ({exc.reason} at byte {exc.start}); pass a text file",
            EXIT_USAGE,
        )
    if isinstance(exc, OSError) and exc.strerror:
        target = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}{target}", EXIT_USAGE
    return (
        f"unexpected {type(exc).__name__}: {_why(exc)} (rerun with --debug for the traceback)",
        EXIT_RUNTIME,
    )
