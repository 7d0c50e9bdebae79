"""No fork while a worker's own background thread is inside a Redis call.

Over TLS such a call runs inside OpenSSL, which holds internal locks. A prefork child
forked at that moment inherits a lock held by a thread that does not exist in the child,
and the child's first TLS connection then blocks forever (seen with gdb: the child waits
in ``CRYPTO_THREAD_write_lock`` inside ``do_handshake``). So those threads hold
``no_fork_meanwhile()`` around each round of Redis work, and a fork in this process
waits for the round to end: at most ``FORK_WAIT_S``, so a thread stuck on an
unreachable Redis cannot stop the pool from replacing a child.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

FORK_WAIT_S = 5.0

_busy = threading.Lock()
_held_for_fork = False


@contextmanager
def no_fork_meanwhile() -> Iterator[None]:
    """Hold off forks of this process while the block runs (do not fork inside it)."""
    lock = _busy
    with lock:
        yield


def _before_fork() -> None:
    global _held_for_fork
    _held_for_fork = _busy.acquire(timeout=FORK_WAIT_S)


def _after_fork_in_parent() -> None:
    global _held_for_fork
    if _held_for_fork:
        _held_for_fork = False
        _busy.release()


def _after_fork_in_child() -> None:
    # The child has none of the parent's threads: start with a free lock.
    global _busy, _held_for_fork
    _busy = threading.Lock()
    _held_for_fork = False


os.register_at_fork(
    before=_before_fork,
    after_in_parent=_after_fork_in_parent,
    after_in_child=_after_fork_in_child,
)
