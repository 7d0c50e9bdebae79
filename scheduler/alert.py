"""What the correlator folds: one device's ``Alert``, and a ``Silence`` folded before it.

A device alert is the detector's first reading of an episode, with what it saw. A
silence is many devices that fell silent together, folded by a sweep
(``scheduler.dropout_fold``) into one event with its device count, so it never becomes
one alert per device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

#: The alert kind of a device's silence (scheduler.anomaly_kind's DROPOUT).
SILENCE_KIND = "dropout"
#: The storm of devices found silent while the silence lasts (by a dropout sweep).
INGEST_GAP = "ingest_gap"
#: The storm of devices whose silence was seen only when they came back (by screening:
#: their returns folded, or dropout alerts of returns past the storm threshold).
MASS_RECONNECT = "mass_reconnect"
#: The group of a silence that spans its whole region.
WHOLE_REGION = "*"


@dataclass(frozen=True)
class Alert:
    """One device's alert from the detector: the first reading of an episode.

    ``observed``, ``expected`` and ``band`` are the reading, the detector's prediction and
    the half-width of its spike band; ``score`` >= 1 is anomalous (NaN when not known).
    """

    device_id: int
    group: str
    region: str
    ts: float
    kind: str
    observed: float = math.nan
    expected: float = math.nan
    band: float = math.nan
    score: float = math.nan

    def evidence(self) -> dict[str, Any]:
        """What the detector saw, JSON-ready (unknown numbers as None)."""
        return {
            "device_id": self.device_id,
            "ts": self.ts,
            "kind": self.kind,
            **{
                name: (None if math.isnan(v) else v)
                for name, v in (
                    ("observed", self.observed),
                    ("expected", self.expected),
                    ("band", self.band),
                    ("score", self.score),
                )
            },
        }


@dataclass(frozen=True)
class Silence:
    """Devices that fell silent together, folded into one event before any device alert.

    ``group`` is the group they share, or ``WHOLE_REGION``; first/last seen are the
    earliest and latest of their last readings; ``sample`` a few of their ids.
    """

    region: str
    group: str
    devices: int
    first_seen_ts: float
    last_seen_ts: float
    sample: tuple[int, ...] = ()
