"""A fork waits while a worker thread is inside a Redis round (workers.fork_guard)."""

from __future__ import annotations

import os
import threading
import time

import pytest

from workers import fork_guard
from workers.fork_guard import no_fork_meanwhile


def test_a_fork_waits_for_the_round_to_end() -> None:
    # Given a background thread inside a guarded round for 0.5 s
    inside = threading.Event()

    def round_() -> None:
        with no_fork_meanwhile():
            inside.set()
            time.sleep(0.5)

    t = threading.Thread(target=round_)
    t.start()
    assert inside.wait(5)
    # When this process forks
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        # The child starts with a free guard (the holder thread does not exist here)
        with no_fork_meanwhile():
            os._exit(0)
    waited_s = time.monotonic() - started
    _, status = os.waitpid(pid, 0)
    t.join()
    # Then the fork happened only once the round was over, and the child could take the guard
    assert waited_s >= 0.3
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_fork_does_not_wait_forever_for_a_stuck_round(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a round that never ends on its own (an unreachable Redis, no timeout)
    monkeypatch.setattr(fork_guard, "FORK_WAIT_S", 0.2)
    release = threading.Event()

    def stuck() -> None:
        with no_fork_meanwhile():
            release.wait(10)

    t = threading.Thread(target=stuck)
    t.start()
    time.sleep(0.05)
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    waited_s = time.monotonic() - started
    release.set()
    os.waitpid(pid, 0)
    t.join()
    # Then the fork went ahead after FORK_WAIT_S: the pool can still replace a child
    assert 0.15 <= waited_s < 5
