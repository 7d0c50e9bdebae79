"""Argument types that reject impossible values when the command line is parsed.

argparse turns the ``ArgumentTypeError`` raised here into one usage line and
exit status 2, before any command touches Redis.
"""

from __future__ import annotations

import argparse
import math
from datetime import UTC, datetime


def _number(text: str, kind: type[int] | type[float]) -> float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a {kind.__name__}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} must be finite")
    return value


def positive_int(text: str) -> int:
    value = int(_number(text, int))
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be at least 1")
    return value


def non_negative_int(text: str) -> int:
    value = int(_number(text, int))
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} must be 0 or more")
    return value


def positive_float(text: str) -> float:
    value = _number(text, float)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be greater than 0")
    return value


def non_negative_float(text: str) -> float:
    value = _number(text, float)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} must be 0 or more")
    return value


def share(text: str) -> float:
    """A fraction between 0 and 1 inclusive."""
    value = _number(text, float)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} must be between 0 and 1")
    return value


def port(text: str) -> int:
    value = int(_number(text, int))
    if not 0 <= value <= 65_535:
        raise argparse.ArgumentTypeError(f"{text} is not a TCP port (0-65535)")
    return value


def iso_time(text: str) -> float:
    """ISO-8601 time (UTC when no zone is given) → epoch seconds."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO-8601 time (e.g. 2026-11-30T12:00:00Z)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def key_prefix_option(parser: argparse.ArgumentParser) -> None:
    """``--key-prefix`` (one name across commands); ``--prefix`` stays as a hidden alias."""
    parser.add_argument("--key-prefix", help="deployment key prefix (default: IOTSCHED_KEY_PREFIX)")
    parser.add_argument("--prefix", dest="key_prefix", help=argparse.SUPPRESS)
