"""Detection quality on injected anomalies: recall, false alerts and delay of true positives.

Pure bookkeeping shared by the benches: given what was injected (device, kind, when it
started and ended) and what was alerted (``scheduler.alert_record`` rows), an alert on
an anomalous device between the anomaly's onset and ``settle_s`` after its end is
explained by it (its end, a shift back, is an event too); every other alert is false.
An anomaly is recalled when an alert it explains was emitted within ``within_s`` of its
onset, the event time of its first abnormal reading; the delay of those alerts is the
detection delay, over true positives only. ``alerted_share`` counts anomalies alerted at
all, however late, so an overloaded pipeline is told apart from a detector that missed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from scheduler.anomaly_kind import KIND_NAMES


@dataclass(frozen=True)
class InjectedAnomaly:
    device_id: int
    kind: str
    onset_ts: float
    #: Event time of the last abnormal reading (inf while it lasts).
    end_ts: float
    magnitude_sigma: float


def judge(
    injected: Sequence[InjectedAnomaly],
    alerts: npt.NDArray[np.void],
    screened_readings: int,
    within_s: float = 5.0,
    settle_s: float = 5.0,
    also_explains: Sequence[InjectedAnomaly] = (),
) -> dict[str, Any]:
    """Recall, false alerts (total and per 1,000 screened readings) and TP detection delay.

    ``also_explains`` are anomalies whose alerts are not false but which are left out of
    recall and delay (e.g. the bench's huge spikes, there to exercise the alert path).
    """
    explained = np.zeros(alerts.size, dtype=np.bool_)
    by_device: dict[int, list[int]] = {}
    for i, device in enumerate(alerts["device_id"].tolist()):
        by_device.setdefault(int(device), []).append(i)

    def explain(anomaly: InjectedAnomaly) -> npt.NDArray[np.intp]:
        mine = np.array(by_device.get(anomaly.device_id, []), dtype=np.intp)
        ts = alerts["ts"][mine]
        inside = mine[(ts >= anomaly.onset_ts) & (ts <= anomaly.end_ts + settle_s)]
        explained[inside] = True
        return inside

    for anomaly in also_explains:
        explain(anomaly)
    delays_ms: list[float] = []
    hits: dict[str, list[int]] = {}
    alerted = 0
    for anomaly in injected:
        inside = explain(anomaly)
        delay_s = alerts["emitted_ts"][inside] - anomaly.onset_ts
        alerted += int(inside.size > 0)
        hit = bool(inside.size) and float(delay_s.min()) <= within_s
        if hit:
            delays_ms.append(1000.0 * float(delay_s.min()))
        hits.setdefault(anomaly.kind, []).append(int(hit))
    false_alerts = int(alerts.size - explained.sum())
    codes, counts = np.unique(alerts["kind"][~explained].astype(np.int64), return_counts=True)
    recalled = sum(sum(h) for h in hits.values())
    return {
        "injected": len(injected),
        "recall": _share(recalled, len(injected)),
        "recall_by_kind": {kind: _share(sum(h), len(h)) for kind, h in sorted(hits.items())},
        # Alerted at all, however late: tells a slow pipeline from a blind detector.
        "alerted_share": _share(alerted, len(injected)),
        "false_alerts": false_alerts,
        "false_alerts_per_1000": round(1000.0 * false_alerts / max(screened_readings, 1), 4),
        # Which kinds the false alerts were: a flood of one kind names its cause.
        "false_alerts_by_kind": {
            _kind_name(int(code)): int(n) for code, n in zip(codes, counts, strict=True)
        },
        "detection_ms": {
            "p50": _pct(delays_ms, 50),
            "p99": _pct(delays_ms, 99),
            "true_positives": len(delays_ms),
        },
    }


def _kind_name(code: int) -> str:
    return KIND_NAMES[code] if 0 <= code < len(KIND_NAMES) else str(code)


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    got = float(np.percentile(values, q, method="higher"))
    return round(got, 1) if math.isfinite(got) else None
