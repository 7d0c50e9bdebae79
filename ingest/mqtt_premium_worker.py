"""PremiumWorker: the premium lane's messages offered on a thread of their own.

Taken by the bridge loop, a premium-lane message waited for whatever that loop was doing
when it arrived: decoding and offering a run of up to 2,000 plain messages, re-offering a
parked batch, parking a cycle's pushed-back readings, publishing everything at an ack
round. On a loaded machine each of those took from tens to hundreds of milliseconds, and
a premium reading offered then still waited in the batcher until the loop's next call
into the producer. Here the lane's network thread hands its messages to this thread,
which offers them at once through a producer of its own (its own batcher, publisher and
connections, so nothing is shared with the bridge loop's), publishes premium batches at
their age limit, and acknowledges the lane's messages on the lane's connection once
their readings are published. The bridge loop holds the GIL at most a switch interval
while this thread waits for it.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable

from ingest.mqtt_client import Received
from ingest.mqtt_held import PUSHED_BACK_WAIT_S
from ingest.mqtt_intake import Intake
from ingest.mqtt_lanes import Lane

#: The longest the thread sleeps with nothing due: it also wakes when messages arrive.
IDLE_WAIT_S = 0.05
#: The interpreter's switch interval in a bridge process with this thread. Each of its
#: Redis round trips gives up the GIL, and at the default 5 ms it waited up to that long
#: for the busy bridge loop to give it back: in mqtt-bench its offers spent 94% of their
#: wall time waiting (652 ms of CPU, 10,898 ms of wall time, for 59,933 messages).
SWITCH_INTERVAL_S = 0.001


class PremiumWorker:
    def __init__(
        self,
        intake: Intake,
        lane: Lane,
        clock: Callable[[], float],
        ack_interval_ms: float,
        max_messages: int,
    ) -> None:
        """``intake``: offers to the worker's own producer and makes messages due on
        ``lane``; ``max_messages``: offered together, at most."""
        self.intake = intake
        self.lane = lane
        self.clock = clock
        self.ack_interval_s = ack_interval_ms / 1000.0
        self.max_messages = max_messages
        #: Handed over by the lane's network thread (deque appends and pops are thread-safe).
        self._arrived: collections.deque[list[Received]] = collections.deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._acked_ts = 0.0
        self._thread = threading.Thread(target=self._run, name="mqtt-premium", daemon=True)

    def put(self, received: list[Received]) -> None:
        """Called on the lane's network thread."""
        self._arrived.append(received)
        self._wake.set()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Offer what arrived, publish it and acknowledge it; then return."""
        self._stop.set()
        self._wake.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._wait_s())
            self._wake.clear()
            self.step()
        self.step()
        self.ack_all()

    def step(self) -> None:
        """Offer what arrived, park what was pushed back, publish what is due, and
        acknowledge when an ack round is due."""
        while self._arrived:
            taken: list[Received] = []
            while self._arrived and len(taken) < self.max_messages:
                taken.extend(self._arrived.popleft())
            self.intake.offer(taken)
        now = self.clock()
        if self.intake.held.due(now):
            self.intake.offer_held(now)
        self.intake.park_pending(now)
        now = self.clock()
        self.intake.producer.poll(now)
        if len(self.lane.acks) and now - self._acked_ts >= self.ack_interval_s:
            self.ack_all()

    def ack_all(self) -> None:
        """Publish everything the producer buffered, then acknowledge what it covers."""
        self.intake.producer.flush()
        self._acked_ts = self.clock()
        self.intake.stats.acked += self.lane.send_acks()

    def _wait_s(self) -> float:
        """Until the producer's next batch is due, or the next ack round."""
        now = self.clock()
        waits = [IDLE_WAIT_S]
        due = self.intake.producer.next_due_ts(now)
        if due is not None:
            waits.append(due - now)
        if len(self.lane.acks):
            waits.append(self._acked_ts + self.ack_interval_s - now)
        if self.intake.held:
            waits.append(PUSHED_BACK_WAIT_S)
        return max(0.0, min(waits))
