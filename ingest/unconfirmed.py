"""Published batches kept until Redis has certainly written them to disk.

With ``appendfsync everysec`` Redis acknowledges a write before it is on
disk; killed within that second, it restarts without the write. A batch the
producer published in the last second before such a crash is gone from the
queue (and from the in-flight ledger, written in the same second).

So the producer keeps what it published here, in memory, and asks Redis for
its ``run_id`` at most every ``check_s``. A batch published more than
``fsync_lag_s`` before a check that finds the same ``run_id`` is on disk, and
is forgotten. When the ``run_id`` changes (the server restarted), everything
not yet confirmed is handed over again; chunk claims make a copy of a batch
that did survive harmless. With ``appendfsync always`` nothing is at risk and
the window can be left off.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from scheduler import defaults
from scheduler.model import Batch

FSYNC_LAG_S = defaults.FSYNC_LAG_S


def redis_run_id(client: Any) -> Callable[[], str]:
    """The server instance's id: it changes whenever Redis restarts."""

    def run_id() -> str:
        return str(client.info("server")["run_id"])

    return run_id


class UnconfirmedWindow:
    def __init__(
        self,
        run_id: Callable[[], str],
        fsync_lag_s: float = FSYNC_LAG_S,
        check_s: float = 0.5,
    ) -> None:
        self.run_id = run_id
        self.fsync_lag_s = fsync_lag_s
        self.check_s = check_s
        self.restarts_seen = 0
        #: Readings handed over again after restarts (survivors among them are skipped).
        self.handed_over_again = 0
        self._sent: deque[tuple[float, Batch]] = deque()
        self._known: str | None = None
        self._checked_at = float("-inf")

    @property
    def readings(self) -> int:
        return sum(len(b) for _, b in self._sent)

    def sent(self, batches: list[Batch], now_ts: float) -> None:
        self._sent.extend((now_ts, b) for b in batches)

    def check(self, now_ts: float) -> list[Batch]:
        """Batches to hand over again (Redis restarted since they were sent), else []."""
        if now_ts - self._checked_at < self.check_s:
            return []
        self._checked_at = now_ts
        current = self.run_id()  # an outage raises: nothing is confirmed or dropped
        if self._known is not None and current != self._known:
            self._known = current
            self.restarts_seen += 1
            again = [b for _, b in self._sent]
            self._sent.clear()
            self.handed_over_again += sum(len(b) for b in again)
            return again
        self._known = current
        while self._sent and self._sent[0][0] <= now_ts - self.fsync_lag_s:
            self._sent.popleft()
        return []
