"""Every command, given impossible values or an unreachable / misconfigured Redis, answers
with one line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from iotsched import argtypes
from iotsched.cli import build_parser, main

#: Option types that accept any value of their kind (none may be numeric).
_FREE_TYPES = (None, str)
_BAD_BY_TYPE = {
    argtypes.positive_int: ["0", "-2", "abc"],
    argtypes.non_negative_int: ["-1", "1.5"],
    argtypes.positive_float: ["0", "-100", "nan"],
    argtypes.non_negative_float: ["-3", "inf"],
    argtypes.share: ["1.5", "-0.1"],
    argtypes.port: ["70000", "-1"],
    argtypes.iso_time: ["yesterday"],
}


def _leaf_parsers(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
    for sub in subs:
        for name, child in sub.choices.items():
            yield from _leaf_parsers(child, (*path, name))


def _typed_options() -> list[tuple[tuple[str, ...], str, object]]:
    out = []
    for path, parser in _leaf_parsers(build_parser()):
        for action in parser._actions:
            if action.option_strings and action.type not in _FREE_TYPES:
                out.append((path, action.option_strings[0], action.type))
    return out


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    try:
        status = main(argv)
    except SystemExit as exc:  # argparse exits on a usage error
        status = exc.code if isinstance(exc.code, int) else 1
    return status, capsys.readouterr().err.strip().splitlines()


def test_every_numeric_option_is_validated_at_parse_time() -> None:
    # Given every option of every command, its type is one of the validating argtypes
    loose = [
        (" ".join(path), opt, getattr(kind, "__name__", kind))
        for path, opt, kind in _typed_options()
        if kind not in _BAD_BY_TYPE and kind is not argparse.FileType
    ]
    loose = [item for item in loose if item[2] != "Path"]
    assert loose == []


@pytest.mark.parametrize(
    ("path", "option", "kind"),
    [pytest.param(p, o, k, id=" ".join((*p, o))) for p, o, k in _typed_options()],
)
def test_bad_numeric_values_give_one_line_and_exit_2(
    path: tuple[str, ...], option: str, kind: object, capsys: pytest.CaptureFixture[str]
) -> None:
    for bad in _BAD_BY_TYPE.get(kind, []):  # type: ignore[call-overload]
        # When the option gets an impossible value
        status, err = _run([*path, f"{option}={bad}"], capsys)
        # Then one line names the option and the command, and the exit is 2
        assert status == 2, (path, option, bad)
        assert len(err) == 1, err
        assert option in err[0] and err[0].startswith(f"iotsched {' '.join(path)}")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


REDIS_COMMANDS = [
    ["status"],
    ["metrics", "--once"],
    ["registry", "show"],
    ["deadletters", "list"],
    ["deadletters", "show", "1-0"],
    ["deadletters", "replay"],
    ["deadletters", "purge", "--before", "2026-01-01"],
    ["maintenance", "list"],
]


@pytest.mark.parametrize("argv", REDIS_COMMANDS, ids=" ".join)
def test_unreachable_redis_is_one_line_naming_the_url(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"redis://127.0.0.1:{_closed_port()}/0"
    status, err = _run([*argv, "--redis-url", url], capsys)
    assert status == 1
    assert err == [
        f"iotsched {argv[0]}: cannot reach Redis at {url} (connection refused);"
        " set IOTSCHED_REDIS_URL"
    ]


def test_invalid_redis_url_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    status, err = _run(["status", "--redis-url", "not-a-url"], capsys)
    assert status == 2
    assert len(err) == 1 and "invalid Redis URL 'not-a-url'" in err[0]


def test_password_is_not_printed(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"redis://:s3cret@127.0.0.1:{_closed_port()}/0"
    _, err = _run(["status", "--redis-url", url], capsys)
    assert len(err) == 1 and "s3cret" not in err[0] and ":***@" in err[0]


def test_binary_input_to_detect_is_one_line(
    tmp_path: object, capsys: pytest.CaptureFixture[str]
) -> None:
    path = os.path.join(str(tmp_path), "noise.csv")
    with open(path, "wb") as fh:
        fh.write(bytes(range(128, 256)) * 4)
    status, err = _run(["detect", path], capsys)
    assert status == 2 and len(err) == 1 and "not UTF-8" in err[0]


def _cli(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "iotsched.cli", *argv],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_bad_environment_is_one_line_and_debug_shows_the_traceback() -> None:
    # Given a setting that is not a number (read when the command line is built)
    env = {"IOTSCHED_VISIBILITY_TIMEOUT_S": "abc"}
    # When any command runs, Then one line names the variable
    done = _cli(env, "status")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "iotsched: configuration: IOTSCHED_VISIBILITY_TIMEOUT_S='abc': expected int"
    ]
    # And --debug shows where it failed
    debug = _cli(env, "--debug", "status")
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_unreachable_redis_from_the_environment_is_one_line() -> None:
    url = f"redis://127.0.0.1:{_closed_port()}/0"
    done = _cli({"IOTSCHED_REDIS_URL": url}, "produce", "--seconds", "1")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1:] == [
        f"iotsched produce: cannot reach Redis at {url} (connection refused);"
        " set IOTSCHED_REDIS_URL"
    ]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["simulate", "--scenario", "nope"], "unknown scenario 'nope'"),
        (["worker", "--region", "mars", "--dry-run"], "unknown region 'mars'"),
        (["scale", "--region", "mars"], "unknown region 'mars'"),
        (["supervise", "--autoscale", "x"], "--autoscale wants MAX,MIN"),
        (["deadletters", "list", "--since", "yesterday"], "not an ISO-8601 time"),
        (["registry", "load", "/nonexistent/fleet.csv"], "no such file"),
        (["detect", "/nonexistent/rec.csv"], "no such file"),
        (["produce", "--rate-rps", "5", "--stdin"], "not allowed with argument"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_bad_non_numeric_values_give_one_line(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, err = _run(argv, capsys)
    assert status == 2
    assert len(err) == 1 and err[0].startswith(f"iotsched {argv[0]}") and expected in err[0], err
