"""The README's command blocks cannot drift from the code.

Blocks marked ``<!-- readme-test: run -->`` need only this machine: they run as
written (bash, ``set -euo pipefail``) against a private redis-server. Every other
``sh`` block is checked line by line: each ``iotsched`` command it shows must be
accepted by the real command line (flags, values).
"""

from __future__ import annotations

import os
import pathlib
import re
import shlex
import subprocess

import pytest

from iotsched.cli import build_parser

ROOT = pathlib.Path(__file__).parents[2]
_BLOCK = re.compile(r"(?:^(<!-- readme-test: run -->)\n)?^```sh\n(.*?)^```", re.M | re.S)
_OPERATORS = {"|", "||", "&&", "&", ";", "<", ">", ">>"}


def _blocks() -> list[tuple[bool, str]]:
    text = (ROOT / "README.md").read_text()
    return [(bool(marker), body) for marker, body in _BLOCK.findall(text)]


def _iotsched_commands(block: str) -> list[list[str]]:
    out = []
    for line in block.splitlines():
        if "iotsched " not in line or "$(" in line:
            continue
        words = shlex.split(line, comments=True)
        cut = next((i for i, w in enumerate(words) if w in _OPERATORS), len(words))
        words = words[:cut]
        if words[:3] == ["uv", "run", "iotsched"]:
            out.append(words[3:])
        elif words[:1] == ["iotsched"]:
            out.append(words[1:])
    return out


def test_the_readme_has_blocks_of_both_kinds() -> None:
    kinds = {run for run, _ in _blocks()}
    assert kinds == {True, False}


@pytest.mark.parametrize(
    "argv",
    [argv for run, block in _blocks() if not run for argv in _iotsched_commands(block)],
    ids=" ".join,
)
def test_every_iotsched_command_shown_is_accepted(argv: list[str]) -> None:
    try:
        build_parser().parse_args(argv)
    except SystemExit as exc:  # --help exits 0; a rejected flag or value exits 2
        assert exc.code == 0, argv


@pytest.mark.integration
@pytest.mark.parametrize(
    "block", [block for run, block in _blocks() if run], ids=lambda b: b.splitlines()[0][:40]
)
def test_runnable_blocks_run_as_written(block: str, redis_server: str, key_prefix: str) -> None:
    env = {**os.environ, "IOTSCHED_REDIS_URL": redis_server, "IOTSCHED_KEY_PREFIX": key_prefix}
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    if "deadletters replay" in block:
        assert "1 accepted, 1 dead-lettered again (malformed 1)" in done.stdout
