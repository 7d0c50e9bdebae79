"""Documented defaults, each with its unit. Settings and command-line flags override them."""

from __future__ import annotations

#: Readings per routine micro-batch before it is flushed on size.
BATCH_MAX_READINGS = 5_000
#: Age at which a premium micro-batch is flushed even if small (premium latency budget).
PREMIUM_MAX_AGE_MS = 25.0
#: Age at which a standard micro-batch is flushed even if small.
STANDARD_MAX_AGE_MS = 250.0
#: Age at which a region's coalesced screening copies are flushed even if few.
SCREEN_MAX_AGE_MS = 100.0

#: Readings whose event time is further ahead of the ingest clock are rejected (clock skew).
MAX_FUTURE_SKEW_S = 300.0
#: Readings older than this at ingest are rejected (a replay from a broken buffer).
MAX_PAST_AGE_S = 7 * 24 * 3600.0
#: A single reading's JSON payload larger than this is rejected.
MAX_READING_BYTES = 4_096
#: Values whose magnitude exceeds this are rejected as corrupt (finite but absurd).
MAX_ABS_VALUE = 1e12

#: Dead-letter stream length (approximate MAXLEN); the oldest entries are trimmed.
DEAD_LETTER_MAXLEN = 100_000
#: How long a processed batch id is remembered for de-duplication of redeliveries.
BATCH_CLAIM_TTL_S = 6 * 3600
#: Per-device per-minute rollups are kept this long.
ROLLUP_TTL_S = 24 * 3600

#: Premium end-to-end latency bound (ingest → processed).
PREMIUM_LATENCY_BOUND_MS = 500.0
#: Anomaly detection bound (event time → alert).
DETECTION_BOUND_S = 5.0

#: Readings per chunk inside a routine task, between preemption checks. One full
#: micro-batch is one chunk (about 12 ms of work, one store transaction); only
#: larger batches (bulk uploads, merged deferrals) are cut. 1,000 cost 70 % more time.
ROUTINE_CHUNK_READINGS = 5_000

#: Registry snapshot refresh check interval in workers and producers.
REGISTRY_REFRESH_S = 5.0
