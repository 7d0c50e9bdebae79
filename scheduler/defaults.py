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
#: Copies of readings held back by admission control are coalesced up to this many
#: readings of a region (or this age, ``ingest.held_coalescer``): a device's held readings
#: then share one fetch and store of its detector state, which is most of screening's
#: cost (``bench/screen_cost.py``: at four readings per device a third of one's cost per
#: reading). 80,000: under half a second of a region's held readings at 2x capacity
#: (about 180,000/s a region held at 680,000/s offered), about twelve per device of a
#: 20,000-device fleet; at 40,000 the copies were full in a quarter second, and the
#: state fetch and store, a third of a held copy's time, came twice as often per reading.
#: Bounded because a screening task holds its slot until done (0.1-0.3 s at this size on
#: a loaded 2-core host): anomaly work and standard processing wait for it; premium has
#: a lane of its own.
HELD_SCREEN_MAX_READINGS = 80_000
HELD_COALESCE_MAX_AGE_MS = 500.0
#: Age at which the publisher sends held copies it was given (sooner when a copy of
#: admitted readings in the same queue is due, every 100 ms under load).
HELD_SCREEN_MAX_AGE_MS = 500.0
#: Held copies of at least this many readings go to the broker as a reference to their
#: in-flight ledger entry (``wire.LEDGER_REF_FIELD``), the task fetching the columns in
#: one HGET: a message's cost in the worker's main process and pool hand-off grows with
#: its bytes, a fetch's hardly. Below it, the columns are cheaper to carry than to fetch.
HELD_SCREEN_REF_MIN_READINGS = 1_000
#: Standard routine batches and admitted screening copies of at least this many readings
#: go as a claim check too, where the ledger shares the broker's Redis (the default
#: deployment; ``Publisher.send_routine``, ``send_screens``): sent whole, a 5,000-reading
#: batch went through Redis four times (ledger, queue, the worker's unacked copy) and
#: through the worker's main process and pipe to its pool child. Measured at 1,100,000
#: readings/s offered (20,000 devices): drain 542,135.6-546,463.8/s before, 655,595.0/s
#: after. Premium batches keep their columns: the lane's fetch would be on premium's path.
CLAIM_CHECK_MIN_READINGS = 1_000
#: Readings a producer keeps, at most, for devices rejoining the held-screening sample
#: (``ingest.held_rejoin``): copies in its memory, about 32 bytes a reading with one
#: metric, so 6 MB: about a second of what a 2x overload holds back on this machine.
HELD_REJOIN_MAX_READINGS = 200_000

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
#: Slots per region that consume premium work only (the premium lane, workers/profiles.py):
#: tasks are not preemptible by premium, so premium's bound holds by construction only
#: on slots no longer task can hold. One per region: premium load fits one slot with
#: room to spare (a premium task of ~50 readings takes ~40 ms); raise it when it does not.
PREMIUM_GUARANTEE_SLOTS = 1
#: Niceness a worker consuming standard work adds to itself at start (0: none). On a
#: saturated host the kernel then runs the premium lane, the producer and Redis first,
#: so premium's turn does not wait behind routine batches' CPU time.
ROUTINE_WORKER_NICE = 5
#: Anomaly detection bound (event time → alert).
DETECTION_BOUND_S = 5.0

#: Readings per chunk inside a routine task, between preemption checks. One full
#: micro-batch is one chunk (about 12 ms of work, one store transaction); only
#: larger batches (bulk uploads, merged deferrals) are cut. 1,000 cost 70 % more time.
ROUTINE_CHUNK_READINGS = 5_000

#: Registry snapshot refresh check interval in workers and producers.
REGISTRY_REFRESH_S = 5.0

#: Oldest a screening copy may wait at the producer to be coalesced with others of its region.
SCREEN_MAX_AGE_MS = 100.0
#: How often beat sends the maintenance tick (windows start within about this of their start).
MAINTENANCE_TICK_INTERVAL_S = 1.0
#: How often beat sends a dropout sweep per region; a full pass over N detector states
#: takes about N / (DROPOUT_PAGE_SIZE * DROPOUT_MAX_PAGES) sweeps.
DROPOUT_SWEEP_INTERVAL_S = 2.0
#: SCAN COUNT per page of the dropout sweep (a hint: Redis may return more or fewer keys).
DROPOUT_PAGE_SIZE = 1_000
#: Pages per sweep task: about 50,000 states (a few MB), so a sweep stays short.
DROPOUT_MAX_PAGES = 50
#: Most a sweep task runs (seconds) before it stops paging (after the page in hand): it
#: holds a worker slot premium may be waiting for. 50 pages took 1.3 s (p50) on a loaded
#: 2-core machine in storm-bench, all of it added to premium's tail; at 0.1 s a sweep
#: adds about a fifth of premium's 500 ms bound, and a pass takes more sweeps.
DROPOUT_SWEEP_BUDGET_S = 0.1

#: Seconds between a data worker's region heartbeats; region health's silence timeout
#: is several of these.
HEARTBEAT_INTERVAL_S = 1.0
#: Past its hard time limit by this much, a running task means the pool is wedged.
HARD_LIMIT_GRACE_S = 10.0
#: A task received but not started for this long, with nothing finishing, means the same.
START_TIMEOUT_S = 30.0
#: A task's pool process stopped (SIGSTOP, a debugger) or gone this long: wedged.
PROCESS_GRACE_S = 5.0
#: How often the in-flight reaper looks for batches the broker lost.
REAP_INTERVAL_S = 1.0

#: Windows starting within this are sent now with an ETA: a tick interval plus margin.
MAINTENANCE_ARM_AHEAD_S = 2.0
#: A sent try that has not started this long after it was due is sent again.
MAINTENANCE_REDISPATCH_AFTER_S = 15.0
#: A running try not heard from this long after the cutoff is taken as lost (worker died).
MAINTENANCE_STOP_GRACE_S = 10.0
#: Ended reservations stay listed this long.
MAINTENANCE_HISTORY_S = 3600.0
#: How long before a window data pools start giving up its slots (pre-drain): long
#: enough for a running routine task to finish its chunk and yield its slot.
MAINTENANCE_PREDRAIN_LEAD_S = 30.0

#: Keys a maintenance operation examines per SCAN step: a step never holds Redis for long.
MAINTENANCE_SCAN_COUNT = 1_000
#: Detector state untouched this long belongs to a silent device: compaction drops it
#: (the device warms up again).
SILENT_DEVICE_S = 6 * 3600
#: Alerts are kept this long by the trim operation.
ALERT_RETENTION_S = 7 * 24 * 3600
#: The alert stream's length (approximate on write, exact when maintenance trims it).
ALERT_STREAM_MAXLEN = 100_000
#: The maintenance events stream's length (approximate).
MAINTENANCE_EVENTS_MAXLEN = 10_000

#: Readings the producer's outbox may hold (plus the batcher's window) before ingest
#: pushes back.
OUTBOX_MAX_READINGS = 2_000_000
#: Batches the producer publishes per outbox replay round trip.
OUTBOX_REPLAY_BATCHES = 64
#: A durable outbox segment is closed and a new one started past this size (bytes).
OUTBOX_SEGMENT_MAX_BYTES = 64 * 1024 * 1024
#: How long a reading counts as unconfirmed after its publish: Redis's appendfsync
#: everysec fsyncs once a second and may postpone a busy fsync by up to two.
FSYNC_LAG_S = 3.0
