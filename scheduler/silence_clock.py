"""The clock a dropout sweep judges silence by: what screening has seen, not the wall.

A device is silent when nothing newer than its last reading has reached screening for
``dropout_factor`` times its usual interval. Judged by the wall clock, every device
whose readings wait in a backlog (held at the gateway by admission control, or queued
for screening) looks silent: under overload the sweep raised tens of thousands of
false dropouts per million readings, all from standard devices whose readings were
merely late.

So each screening stream keeps a frontier, the newest event time it has screened, per
region and tier, and a device's silence is measured up to its tier's frontier. A tier
whose stream has stopped altogether (a real outage) still gets its silent devices
reported: the frontier is never taken as more than ``max_lag_s`` behind the wall, so
the outage shows after that long and folds into one storm incident downstream.

A region whose every stream has stopped is judged by the wall clock much sooner, after
``stall_s``: premium is screened within its latency bound whatever the load, so nothing
screened from the region for that long means nothing is arriving (a gateway or network
outage), not a backlog. That reading needs a premium stream: in a region that has none
(no premium devices), standard's screening may lag past ``stall_s`` behind a backlog
while its readings flow, so such a region is judged stalled only after ``max_lag_s``
like any stopped stream. The sweep then sees the outage while it lasts and folds it into
one event (``scheduler.dropout_fold``) before the devices come back, instead of every
returning device ending its silence with a dropout alert.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]

#: How far behind the wall clock screening may be before silence is judged by the wall
#: again (seconds). Admission control keeps waits near its 2 s budget; a screening
#: stream this far behind has stopped, and its devices' silence is real.
DEFAULT_MAX_LAG_S = 30.0

#: Nothing screened from a region for this long (seconds of event time behind the wall,
#: over all its streams) means its ingest stopped: ten times premium's 1 s detection
#: bound, and short of the silence limit of devices that report every few seconds.
DEFAULT_STALL_S = 10.0

#: Screening copies that mix several tiers carry this tier name.
MIXED_TIER = "mixed"
#: The stream screened within its latency bound whatever the load: only while it has
#: been seen can a region whose streams all lag be read as stalled.
BOUNDED_TIER = "premium"


def sweep_now_ts(
    frontier_ts: Mapping[str, float],
    tier_names: Sequence[str],
    device_tier: npt.NDArray[np.integer],
    wall_ts: float,
    max_lag_s: float = DEFAULT_MAX_LAG_S,
    stall_s: float = DEFAULT_STALL_S,
) -> F64:
    """Per device, the instant up to which its silence is measured.

    ``frontier_ts`` maps a screening stream's tier name ("mixed" for mixed copies) to
    the newest event time it screened; ``device_tier`` holds tier codes into
    ``tier_names``. A tier's frontier is the newer of its own stream's and the mixed
    one's; a tier with neither is judged by the wall clock, and so is every tier when
    the region has a premium stream and the newest of all its frontiers is more than
    ``stall_s`` behind the wall.
    """
    mixed = frontier_ts.get(MIXED_TIER)
    per_tier = np.empty(len(tier_names), dtype=np.float64)
    for code, name in enumerate(tier_names):
        seen = [ts for ts in (frontier_ts.get(name), mixed) if ts is not None]
        per_tier[code] = max(seen) if seen else wall_ts
    stalled = BOUNDED_TIER in frontier_ts and max(frontier_ts.values()) < wall_ts - stall_s
    floor = wall_ts if stalled else wall_ts - max_lag_s
    clock = np.clip(per_tier, floor, wall_ts)
    codes = np.clip(np.asarray(device_tier, dtype=np.intp), 0, max(len(tier_names) - 1, 0))
    return clock[codes] if len(tier_names) else np.full(codes.shape, wall_ts)
