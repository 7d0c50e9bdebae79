"""Prometheus text exposition (format 0.0.4) of one metrics snapshot; no I/O here.

Names follow Prometheus conventions so ``promtool check metrics`` passes: base
units (seconds), ``_total`` on counters, latency as histograms. Histograms are
cumulative since the deployment started; recent figures come from PromQL
(``histogram_quantile(0.99, rate(..._bucket[5m]))``), not from this process.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from scheduler.latency import GROWTH, upper_edge_ms

#: Histogram upper bounds (seconds) exposed; the stored 5 %-wide buckets fold into these.
LE_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


@dataclass
class Snapshot:
    """What one scrape read from Redis; ``now_ts`` in epoch seconds."""

    now_ts: float
    queues: Mapping[str, int]
    counters: Mapping[str, int]
    #: tier → stored latency histogram (bucket index → count), ingest to processed.
    processing_latency: Mapping[str, Mapping[int, int]]
    #: stage ("alert", "notify") → stored histogram.
    detection_latency: Mapping[str, Mapping[int, int]]
    #: region → last heartbeat of a worker draining its data queues (epoch seconds).
    heartbeats: Mapping[str, float]
    #: (region, class) → (slots granted, slots busy), from fresh pool heartbeats.
    slots: Mapping[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    #: region → (active reservations, slots they hold).
    reservations: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    #: region → last heartbeat of its premium lane (epoch seconds).
    lane_heartbeats: Mapping[str, float] = field(default_factory=dict)


#: A section turns a snapshot into metric families (lines); append to add one.
Section = Callable[[Snapshot], list[str]]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: str) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def family(name: str, kind: str, help_text: str, samples: Iterable[tuple[str, float]]) -> list[str]:
    """HELP, TYPE and ``(label text, value)`` samples of one family; empty families are kept
    (HELP and TYPE only) so dashboards find the name before the first event."""
    out = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    out += [f"{name}{labels} {_number(value)}" for labels, value in samples]
    return out


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.6g}"


def histogram(
    name: str, help_text: str, label: str, hists: Mapping[str, Mapping[int, int]]
) -> list[str]:
    """Stored log-bucket histograms folded into ``LE_S`` buckets (a stored bucket counts under
    the first bound at or above its upper edge). ``_sum`` is estimated from bucket midpoints."""
    out = [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
    for key, counts in sorted(hists.items()):
        per_le = [0] * (len(LE_S) + 1)
        total_s = 0.0
        for bucket, n in counts.items():
            edge_s = upper_edge_ms(bucket) / 1000.0
            slot = next((i for i, le in enumerate(LE_S) if edge_s <= le), len(LE_S))
            per_le[slot] += n
            total_s += n * edge_s / math.sqrt(GROWTH)
        running = 0
        for le, n in zip((*map(_number, LE_S), "+Inf"), per_le, strict=True):
            running += n
            out.append(f"{name}_bucket{_labels(**{label: key, 'le': le})} {running}")
        out.append(f"{name}_sum{_labels(**{label: key})} {total_s:.6f}")
        out.append(f"{name}_count{_labels(**{label: key})} {running}")
    return out


def queue_section(s: Snapshot) -> list[str]:
    # Both names: celery_queue_length is what Celery exporters' dashboards already query.
    depth = sorted(s.queues.items())
    return family(
        "celery_queue_length",
        "gauge",
        "Messages waiting in a Celery queue (all priority lists).",
        ((_labels(queue_name=q), n) for q, n in depth),
    ) + family(
        "iotsched_queue_depth_messages",
        "gauge",
        "Messages waiting in a queue (all priority lists).",
        ((_labels(queue=q), n) for q, n in depth),
    )


#: counter hash field (before any ``:label``) → (metric name, label name, help).
KNOWN_COUNTERS: dict[str, tuple[str, str, str]] = {
    "ingested": ("iotsched_ingested_readings_total", "", "Readings offered to ingest."),
    "accepted": ("iotsched_accepted_readings_total", "", "Readings ingest accepted."),
    "pushed_back": (
        "iotsched_pushed_back_readings_total",
        "",
        "Readings handed back to the caller (region backlog past its cap).",
    ),
    "skipped_empty_lines": (
        "iotsched_skipped_empty_lines_total",
        "",
        "Empty input lines skipped by produce --stdin.",
    ),
    "processed": ("iotsched_processed_readings_total", "tier", "Readings applied, by tier."),
    "batches": ("iotsched_processed_batches_total", "tier", "Batches applied, by tier."),
    "deferrals": ("iotsched_deferrals_total", "reason", "Routine tasks that deferred work."),
    "deferred_readings": (
        "iotsched_deferred_readings_total",
        "",
        "Readings sent back to their queue by a deferring task.",
    ),
    "screened_readings": ("iotsched_screened_readings_total", "", "Readings screened."),
    "device_alerts": ("iotsched_device_alerts_total", "", "Per-device anomaly alerts raised."),
}
_DEAD = "dead_lettered"


def counter_section(s: Snapshot) -> list[str]:
    """Every counter of the counters hash, one family per thing counted."""
    # Known families are always declared, so a dashboard finds them before the first event.
    grouped: dict[str, tuple[str, list[tuple[str, float]]]] = {
        name: (help_text, []) for name, _, help_text in KNOWN_COUNTERS.values()
    }
    by_reason = {k.partition(":")[2]: v for k, v in s.counters.items() if k.startswith(_DEAD + ":")}
    for field_name, value in sorted(s.counters.items()):
        base, _, label_value = field_name.partition(":")
        if base == _DEAD:
            continue
        name, label, help_text = KNOWN_COUNTERS.get(
            base, (f"iotsched_{_snake(base)}_total", "kind", f"Count of {base} events.")
        )
        if not name.endswith("_total"):
            name += "_total"
        labels = _labels(**{label or "kind": label_value}) if label_value else ""
        grouped.setdefault(name, (help_text, []))[1].append((labels, value))
    # Letters counted before per-reason counters existed are reported as such, so the
    # reasons always add up to the dead_lettered total.
    unrecorded = s.counters.get(_DEAD, 0) - sum(by_reason.values())
    if unrecorded > 0:
        by_reason["unrecorded"] = unrecorded
    out = family(
        "iotsched_dead_lettered_readings_total",
        "counter",
        "Readings sent to the dead-letter stream, by reason.",
        ((_labels(reason=r), n) for r, n in sorted(by_reason.items())),
    )
    for name, (help_text, samples) in sorted(grouped.items()):
        out += family(name, "counter", help_text, samples)
    return out


def _snake(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text.lower()).strip("_") or "unnamed"


def latency_section(s: Snapshot) -> list[str]:
    return histogram(
        "iotsched_processing_latency_seconds",
        "Time from a reading's first offer to ingest until it is applied, by tier.",
        "tier",
        s.processing_latency,
    ) + histogram(
        "iotsched_detection_latency_seconds",
        "Detection latency: alert = event time to device alert, notify = incident to notification.",
        "stage",
        s.detection_latency,
    )


def region_section(s: Snapshot) -> list[str]:
    out = family(
        "iotsched_heartbeat_age_seconds",
        "gauge",
        "Seconds since a region's workers of a role last reported: data (every data queue) "
        "or premium (the premium lane); a live lane does not keep routine work drained.",
        (
            (_labels(region=r, role=role), round(s.now_ts - ts, 3))
            for role, beats in (("data", s.heartbeats), ("premium", s.lane_heartbeats))
            for r, ts in sorted(beats.items())
        ),
    )
    slots = sorted(s.slots.items())
    out += family(
        "iotsched_slots_granted",
        "gauge",
        "Worker pool slots granted, by region and work class (fresh pool heartbeats).",
        ((_labels(region=r, work_class=c), g) for (r, c), (g, _) in slots),
    )
    out += family(
        "iotsched_slots_used",
        "gauge",
        "Worker pool slots running a task, by region and work class.",
        ((_labels(region=r, work_class=c), u) for (r, c), (_, u) in slots),
    )
    res = sorted(s.reservations.items())
    out += family(
        "iotsched_reservations_active",
        "gauge",
        "Maintenance reservations whose window is open now.",
        ((_labels(region=r), n) for r, (n, _) in res),
    )
    out += family(
        "iotsched_reserved_slots",
        "gauge",
        "Slots held by the open maintenance reservations.",
        ((_labels(region=r), n) for r, (_, n) in res),
    )
    return out


SECTIONS: list[Section] = [queue_section, counter_section, latency_section, region_section]


def exposition(snapshot: Snapshot, sections: Iterable[Section] = SECTIONS) -> str:
    lines: list[str] = []
    for section in sections:
        lines += section(snapshot)
    return "\n".join(lines) + "\n"
