"""Each kind of failure maps to one line that says what failed and what to do."""

from __future__ import annotations

import pytest
import redis
from kombu.exceptions import OperationalError

from iotsched.cli_errors import EXIT_RUNTIME, EXIT_USAGE, describe, redact
from scheduler.errors import ConfigError

URL = "redis://:pw@db.example:6380/2"
SHOWN = "redis://:***@db.example:6380/2"


def _wrapped() -> OperationalError:
    # kombu re-raises a Redis error as OperationalError with the original as its cause
    try:
        try:
            raise redis.ConnectionError(
                "Error 111 connecting to db.example:6380. Connection refused."
            )
        except redis.ConnectionError as inner:
            raise OperationalError(str(inner)) from inner
    except OperationalError as outer:
        return outer


@pytest.mark.parametrize(
    ("exc", "message", "status"),
    [
        (
            redis.ConnectionError("Error 111 connecting to db.example:6380. Connection refused."),
            f"cannot reach Redis at {SHOWN} (connection refused); set IOTSCHED_REDIS_URL",
            EXIT_RUNTIME,
        ),
        (
            _wrapped(),
            f"cannot reach Redis at {SHOWN} (connection refused); set IOTSCHED_REDIS_URL",
            EXIT_RUNTIME,
        ),
        (
            redis.TimeoutError("Timeout reading from socket"),
            f"cannot reach Redis at {SHOWN} (timed out); set IOTSCHED_REDIS_URL",
            EXIT_RUNTIME,
        ),
        (
            redis.AuthenticationError("invalid username-password pair"),
            f"Redis at {SHOWN} refused the credentials (invalid username-password pair); "
            "set the user and password in IOTSCHED_REDIS_URL",
            EXIT_RUNTIME,
        ),
        (
            redis.ResponseError("NOAUTH Authentication required."),
            f"Redis at {SHOWN} refused the credentials (NOAUTH Authentication required); "
            "set the user and password in IOTSCHED_REDIS_URL",
            EXIT_RUNTIME,
        ),
        (
            ConfigError("IOTSCHED_X='a': expected int"),
            "configuration: IOTSCHED_X='a': expected int",
            EXIT_USAGE,
        ),
        (
            FileNotFoundError(2, "No such file or directory", "fleet.csv"),
            "No such file or directory: fleet.csv",
            EXIT_USAGE,
        ),
        (
            RuntimeError("boom"),
            "unexpected RuntimeError: boom (rerun with --debug for the traceback)",
            EXIT_RUNTIME,
        ),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else None,
)
def test_failures_become_one_line(exc: BaseException, message: str, status: int) -> None:
    assert describe(exc, URL) == (message, status)


def test_redact_hides_only_the_password() -> None:
    assert redact("rediss://app:s3cret@h:6379/0?ssl_cert_reqs=required") == (
        "rediss://app:***@h:6379/0?ssl_cert_reqs=required"
    )
    assert redact("redis://h:6379/0") == "redis://h:6379/0"


def test_missing_password_is_named() -> None:
    exc = redis.AuthenticationError("HELLO must be called with the client already authenticated")
    message, _ = describe(exc, "redis://127.0.0.1:6379/0")
    assert message == (
        "Redis at redis://127.0.0.1:6379/0 refused the credentials (the URL has no password); "
        "set the user and password in IOTSCHED_REDIS_URL"
    )
