"""Domain nouns: tiers, regions, work classes, and the columnar micro-batch.

Arrays carry small integer codes (tier index, region index) so a batch of
thousands of readings is a handful of numpy columns, never a list of objects.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

DEFAULT_TIERS: tuple[str, ...] = ("premium", "standard")
DEFAULT_REGIONS: tuple[str, ...] = ("eu-west", "us-east", "ap-south")

U64 = npt.NDArray[np.uint64]
F64 = npt.NDArray[np.float64]
U8 = npt.NDArray[np.uint8]


class WorkClass(enum.Enum):
    """A kind of work a region's capacity is split between, in order of importance."""

    MAINTENANCE = "maintenance"
    ANOMALY = "anomaly"
    SCREEN = "screen"
    PREMIUM = "premium"
    STANDARD = "standard"


#: The order a region worker drains its queues in (DESIGN: anomaly, screen, premium, standard).
QUEUE_ORDER: tuple[WorkClass, ...] = (
    WorkClass.ANOMALY,
    WorkClass.SCREEN,
    WorkClass.PREMIUM,
    WorkClass.STANDARD,
)


#: Screening of the first (premium) tier's readings: its own queue, ahead of premium, so
#: premium devices' detection stays within its bound. Screening of every other tier keeps
#: ``{region}.screen`` and ranks *below* premium processing: under overload it waits,
#: premium does not (DESIGN: work above premium is bounded).
SCREEN_PREMIUM_KIND = "screen_premium"

#: A data worker's queue kinds in ``-Q`` order.
DATA_QUEUE_KINDS: tuple[str, ...] = (
    WorkClass.ANOMALY.value,
    SCREEN_PREMIUM_KIND,
    WorkClass.PREMIUM.value,
    WorkClass.SCREEN.value,
    WorkClass.STANDARD.value,
)


def screen_queue_kind(tier_code: int) -> str:
    """The screening queue kind for a tier (index into ``Topology.tiers``; 0 is premium)."""
    return SCREEN_PREMIUM_KIND if tier_code == 0 else WorkClass.SCREEN.value


def queue_name(region: str, kind: str) -> str:
    """The Celery queue for one region and kind of work, e.g. ``eu-west.premium``."""
    return f"{region}.{kind}"


@dataclass(frozen=True)
class Topology:
    """The configured tiers and regions; array codes index into these tuples."""

    tiers: tuple[str, ...] = DEFAULT_TIERS
    regions: tuple[str, ...] = DEFAULT_REGIONS

    def tier_code(self, tier: str) -> int:
        return self.tiers.index(tier)

    def region_code(self, region: str) -> int:
        return self.regions.index(region)

    def all_regions_mask(self) -> int:
        return (1 << len(self.regions)) - 1


@dataclass
class Batch:
    """A columnar micro-batch of readings for one (region, tier).

    ``values`` has one column per metric; ``ts`` is event time and ``ingest_ts``
    the moment ingest accepted each reading, both epoch seconds UTC.
    """

    batch_id: str
    region: str
    tier: str
    metrics: tuple[str, ...]
    device_id: U64
    ts: F64
    values: F64
    ingest_ts: F64
    #: How many times this batch was handed back (deferred or retried) before.
    attempt: int = 0
    extra: dict[str, object] = field(default_factory=dict)
    #: Producer side only (never on the wire): True for rows already sent to screening
    #: while they were held back, whose screening copy must not be sent again.
    screened: npt.NDArray[np.bool_] | None = None

    def __len__(self) -> int:
        return int(self.device_id.shape[0])

    def take(self, index: npt.NDArray[np.intp] | slice, batch_id: str) -> Batch:
        """A sub-batch (same region, tier, metrics) under a new id."""
        return Batch(
            batch_id=batch_id,
            region=self.region,
            tier=self.tier,
            metrics=self.metrics,
            device_id=self.device_id[index],
            ts=self.ts[index],
            values=self.values[index],
            ingest_ts=self.ingest_ts[index],
            attempt=self.attempt,
            screened=None if self.screened is None else self.screened[index],
        )


def empty_batch(batch_id: str, region: str, tier: str, metrics: Sequence[str]) -> Batch:
    m = len(metrics)
    return Batch(
        batch_id=batch_id,
        region=region,
        tier=tier,
        metrics=tuple(metrics),
        device_id=np.empty(0, dtype=np.uint64),
        ts=np.empty(0, dtype=np.float64),
        values=np.empty((0, m), dtype=np.float64),
        ingest_ts=np.empty(0, dtype=np.float64),
    )


@dataclass(frozen=True)
class DeadLetter:
    """A rejected reading or batch, kept with the reason it was rejected."""

    reason: str
    detail: str
    payload: bytes
    source: str  # "ingest" or the task that gave up
    at_ts: float
    #: Readings this letter stands for: 1 for a reading, the batch size for a batch.
    readings: int = 1


def readings_by_reason(letters: Iterable[DeadLetter]) -> dict[str, int]:
    """Readings per dead-letter reason (the ``dead_lettered:{reason}`` counters)."""
    out: dict[str, int] = {}
    for dl in letters:
        out[dl.reason] = out.get(dl.reason, 0) + dl.readings
    return out
