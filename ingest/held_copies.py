"""How the producer sends screening copies of the readings it holds back.

Through the publisher's ``screen_many`` (none while the broker is away or in its
outage backoff: the screener keeps them unscreened), each region's copies after the
other tiers' batches the batcher holds for that region, so a device's admitted
readings reach screening ahead of its newer held ones.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from ingest.broker_link import BrokerLink
from ingest.held_screener import BeforeRegion, HeldScreener, SendCopies
from scheduler.batching import Batcher
from scheduler.model import Batch


class HeldCopies:
    def __init__(self, screener: HeldScreener, link: BrokerLink, batcher: Batcher) -> None:
        self.screener = screener
        self.link = link
        self.batcher = batcher

    def screen(
        self,
        rows: npt.NDArray[np.int64],
        dev: npt.NDArray[np.uint64],
        t: npt.NDArray[np.float64],
        v: npt.NDArray[np.float64],
        region: npt.NDArray[np.integer],
        tier: npt.NDArray[np.integer],
        now: float,
    ) -> int:
        """Screening copies of held readings, within the budget; returns those screened."""
        send, before_region = self.senders(now)
        return self.screener.screen((rows, dev, t, v), region, tier, now, send, before_region)

    def admitted(
        self,
        rows: npt.NDArray[np.int64],
        t: npt.NDArray[np.float64],
        region: npt.NDArray[np.integer],
        now: float,
        offered_ts: npt.NDArray[np.float64] | None = None,
    ) -> npt.NDArray[np.bool_]:
        """Non-premium readings admitted now (``HeldScreener.admitted``), first offered at
        ``offered_ts``: which were screened while held; devices' coalesced readings go
        ahead of their newer ones."""
        return self.screener.admitted(rows, t, region, now, *self.senders(now), offered_ts)

    def poll(self, now: float) -> None:
        """Send the coalesced copies that are due."""
        self.screener.poll(now, *self.senders(now))

    def flush(self, now: float) -> None:
        """Send every coalesced copy (shutdown, end of a run)."""
        self.screener.flush(now, *self.senders(now))

    def rejoined(self, now: float) -> int:
        """Devices rejoining the sample whose older held readings are all admitted now
        (in the batcher, so screened before): what they kept since is screened."""
        return self.screener.rejoined(now, *self.senders(now))

    def senders(self, now: float) -> tuple[SendCopies | None, BeforeRegion]:
        """How held readings' copies are sent (None: not now), and what goes first."""
        screen_many = getattr(self.link.publisher, "screen_many", None)
        send = None
        if screen_many is not None and not self.link.degraded and not self.link.in_backoff():

            def send(copies: list[Batch]) -> bool:
                return self.link.guarded(screen_many, copies) is True

        def before_region(code: int) -> None:
            tiers = range(1, len(self.batcher.topology.tiers))
            self.link.publish(self.batcher.cut_region(code, tiers), now)

        return send, before_region
