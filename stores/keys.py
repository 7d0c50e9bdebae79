"""Every Redis key iotsched uses is named here, and nowhere else.

All keys share one prefix, so a deployment (or a benchmark run) owns exactly
the keys under ``{prefix}:`` and can list or delete them without touching
anything else on the server.
"""

from __future__ import annotations

from dataclasses import dataclass

#: kombu's Redis priority steps: one broker list per step for every queue.
PRIORITY_STEPS = (0, 3, 6, 9)


@dataclass(frozen=True)
class Keys:
    prefix: str = "iotsched"

    def claim(self, batch_id: str) -> str:
        """Set once when a batch's effects are applied; a redelivery finds it and skips."""
        return f"{self.prefix}:claim:{batch_id}"

    def rollup(self, minute_ts: int, writer: str) -> str:
        """Hash of one minute's rollups written by one worker process: device id → packed row.

        Each process writes only its own hash, so concurrent batches never race
        on a read-modify-write; a reader merges the rows of every writer.
        """
        return f"{self.prefix}:rollup:{minute_ts}:{writer}"

    def rollup_writers(self, minute_ts: int) -> str:
        """Set of the writers that hold rollups for a minute."""
        return f"{self.prefix}:rollup-writers:{minute_ts}"

    def rollup_pattern(self) -> str:
        return f"{self.prefix}:rollup:*"

    @property
    def counters(self) -> str:
        return f"{self.prefix}:counters"

    def latency(self, kind: str, tier: str) -> str:
        """Histogram hash: bucket → count; kind is "ingest", "event" or "started"."""
        return f"{self.prefix}:latency:{kind}:{tier}"

    @property
    def dead_letters(self) -> str:
        """Stream of rejected readings and batches: reason, detail, original payload, source."""
        return f"{self.prefix}:deadletter"

    @property
    def registry(self) -> str:
        return f"{self.prefix}:registry"

    @property
    def registry_version(self) -> str:
        return f"{self.prefix}:registry:version"

    def detector_state(self, device_id: int) -> str:
        return f"{self.prefix}:det:{device_id}"

    @property
    def detector_state_head(self) -> bytes:
        """``detector_state(d)`` is this followed by ``d`` in decimal: a batch's keys are
        packed from it and the device ids in one go (``stores.resp.id_bulks``)."""
        return f"{self.prefix}:det:".encode()

    @property
    def alerts(self) -> str:
        return f"{self.prefix}:alerts"

    @property
    def recent_device_alerts(self) -> str:
        """Capped list of device-alert records (``scheduler.alert_record``), newest first."""
        return f"{self.prefix}:alerts:recent"

    def screened_frontier(self, region: str) -> str:
        """Sorted set: per screening stream (tier name) the newest event ts screened."""
        return f"{self.prefix}:screened:{region}:frontier"

    @property
    def detector_writes(self) -> str:
        """Counter of detector-state writes (screening commits, dropout marks), each
        counted in its own MULTI/EXEC: a writer that finds it where it was when it read
        the states knows no state changed since (``stores.detector_store``)."""
        return f"{self.prefix}:detector-writes"

    def detector_stream_writes(self, stream: str) -> str:
        """Counter of the screening commits whose devices are all of one detector write
        stream (``scheduler.registry.detector_stream``: a home region and a tier); any
        other state writer counts in ``detector_writes``. A commit checks both, so one
        stream's screenings never make another's read their states again."""
        return f"{self.prefix}:detector-writes:{stream}"

    def screen_turn(self, region: str) -> str:
        """The batch of ``region`` a collision refused, screening again while the region's
        other batches' loads and commits wait (short TTL); other regions do not wait."""
        return f"{self.prefix}:screen-turn:{region}"

    def screen_outbox(self, batch_id: str) -> str:
        """A screened batch's alerts, stored by its commit until they are published."""
        return f"{self.prefix}:outbox:screen:{batch_id}"

    def screen_claim(self, batch_id: str) -> str:
        """Set once when a batch's screening effects are stored (its own namespace)."""
        return f"{self.prefix}:claim:screen:{batch_id}"

    def anomaly_claim(self, batch_id: str) -> str:
        """Set once when a screened batch's alerts are folded into incidents."""
        return f"{self.prefix}:claim:anomaly:{batch_id}"

    def detection_latency(self, stage: str) -> str:
        """Histogram hash: bucket → count; stage "alert" (event time → device alert emitted)
        or "notify" (incident first seen → first notification)."""
        return f"{self.prefix}:latency:detection:{stage}"

    def incidents(self, region: str) -> str:
        """A region's correlator state (msgpack)."""
        return f"{self.prefix}:incidents:{region}"

    def incidents_lock(self, region: str) -> str:
        """The lock workers from before optimistic incident folds fold under: folds wait
        while it is held (``RedisIncidentStore.fold``), so a rolling upgrade is safe."""
        return f"{self.prefix}:incidents:{region}:lock"

    def incidents_tick(self, region: str) -> str:
        """When the next correlator tick for a region is scheduled (epoch seconds)."""
        return f"{self.prefix}:incidents:{region}:tick"

    def broker_queue(self, queue: str) -> str:
        """The broker list of a Celery queue (its default-priority list)."""
        return f"{self.broker_prefix}{queue}"

    @property
    def heartbeats(self) -> str:
        """Hash: region → last beat (ts) of a worker draining all its data queues."""
        return f"{self.prefix}:heartbeats"

    @property
    def lane_heartbeats(self) -> str:
        """Hash: region → last beat (ts) of its premium lane (premium queues only)."""
        return f"{self.prefix}:heartbeats:premium_lane"

    @property
    def reservations(self) -> str:
        return f"{self.prefix}:reservations"

    @property
    def maintenance_runs(self) -> str:
        """Hash: reservation id → its operation run (JSON), beside the reservation book."""
        return f"{self.prefix}:maintenance:runs"

    @property
    def maintenance_drain(self) -> str:
        """Hash: region → slots data pools must hold back now (pre-drain level) for maintenance."""
        return f"{self.prefix}:maintenance:drain"

    @property
    def maintenance_events(self) -> str:
        """Stream of maintenance run events (dispatched, started, succeeded, failed, rebooked)."""
        return f"{self.prefix}:maintenance:events"

    @property
    def transfer(self) -> str:
        """Hash of placement accounting: readings, bytes, cost per region pair; home; waiting."""
        return f"{self.prefix}:transfer"

    def rollup_family_pattern(self) -> str:
        """Matches rollup hashes and their writer sets (``rollup``, ``rollup_writers``)."""
        return f"{self.prefix}:rollup*"

    def rollup_minute_ts(self, key: str) -> int | None:
        """The minute of a key built by ``rollup`` or ``rollup_writers``; None for any other."""
        for head in (f"{self.prefix}:rollup:", f"{self.prefix}:rollup-writers:"):
            if key.startswith(head):
                minute = key[len(head) :].partition(":")[0]
                return int(minute) if minute.isdigit() else None
        return None

    def detector_state_pattern(self) -> str:
        return f"{self.prefix}:det:*"

    def detector_device_id(self, key: str) -> int | None:
        """The device of a key built by ``detector_state``; None for any other key."""
        head = f"{self.prefix}:det:"
        tail = key[len(head) :] if key.startswith(head) else ""
        return int(tail) if tail.isdigit() else None

    def accelerate_gate(self, region: str, incident_id: str) -> str:
        """Set (with a short TTL) while an incident's accelerated processing may not run again."""
        return f"{self.prefix}:incidents:{region}:accelerate:{incident_id}"

    def work_budget(self, region: str) -> str:
        """A region's budget of work ranked above premium (theoretical arrival time)."""
        return f"{self.prefix}:budget:{region}:above_premium"

    def dropout_cursor(self, region: str) -> str:
        """A region's dropout sweep position: the SCAN cursor over detector states."""
        return f"{self.prefix}:dropout:{region}:cursor"

    def dropout_folded(self, region: str) -> str:
        """Sorted set: device id → last reading (ts) of a silence folded into an event."""
        return f"{self.prefix}:dropout:{region}:folded"

    def dropout_events(self, region: str) -> str:
        """Hash: group ("*": the region) → "first_ts last_ts" of its latest folded silence."""
        return f"{self.prefix}:dropout:{region}:events"

    def dropout_armed(self, region: str) -> str:
        """Sorted set: folded device id → when its peers were first seen back (ts)."""
        return f"{self.prefix}:dropout:{region}:armed"

    def dropout_found(self, region: str) -> str:
        """Sorted set: folded device id → the sweep pass that last found it in the region."""
        return f"{self.prefix}:dropout:{region}:found"

    def dropout_pass(self, region: str) -> str:
        """A region's dropout sweep pass number (counts passes over every detector state)."""
        return f"{self.prefix}:dropout:{region}:pass"

    def dropout_lock(self, region: str) -> str:
        """Held (token, with a TTL) by the one dropout sweep of a region running now."""
        return f"{self.prefix}:dropout:{region}:lock"

    @property
    def inflight(self) -> str:
        """Hash: routine batch id → its queue and payload, from publish until fully applied."""
        return f"{self.prefix}:inflight"

    @property
    def inflight_since(self) -> str:
        """Sorted set: routine batch id by when it was (re)published."""
        return f"{self.prefix}:inflight-since"

    @property
    def inflight_reaper_lock(self) -> str:
        return f"{self.prefix}:inflight-reaper"

    @property
    def broker_prefix(self) -> str:
        """kombu ``global_keyprefix``: broker lists and bindings live under the same prefix."""
        return f"{self.prefix}:q:"

    def preempt_tokens(self, region: str) -> str:
        """Counter of routine tasks that agreed to yield to the current anomaly backlog."""
        return f"{self.prefix}:preempt:tokens:{region}"

    def anomaly_start_latency(self, region: str) -> str:
        """Histogram hash: bucket → count of anomaly tasks' wait, enqueued → started."""
        return f"{self.prefix}:preempt:start:{region}"

    def owned_pattern(self) -> str:
        return f"{self.prefix}:*"

    def broker_queue_lists(self, queue: str) -> tuple[str, ...]:
        """Every broker list of a Celery queue. kombu's Redis transport keeps one per
        priority step (0, 3, 6, 9): step 0 under the queue's own name, the others as
        ``name + "\\x06\\x16" + step`` (kombu.transport.redis ``_q_for_pri``)."""
        base = f"{self.broker_prefix}{queue}"
        return (base, *(f"{base}\x06\x16{step}" for step in PRIORITY_STEPS[1:]))

    @property
    def scaling_taken(self) -> str:
        """Hash: queue → messages workers took off it; arrival = Δdepth + Δtaken."""
        return f"{self.prefix}:scaling:taken"

    @property
    def scaling_pools(self) -> str:
        """Hash: worker node name → JSON of its pool (slots, busy, desired, at_ts)."""
        return f"{self.prefix}:scaling:pools"

    @property
    def scaling_replicas(self) -> str:
        """Hash: region → desired worker replicas, for an orchestrator to apply."""
        return f"{self.prefix}:scaling:replicas"

    @property
    def scaling_desired(self) -> str:
        """Hash: "{region}:{class}" → worker replicas the autoscaler wants for that work
        class ("all": the region's data pools), for an orchestrator's scaler (KEDA)."""
        return f"{self.prefix}:scaling:desired"

    # Parked readings (stores/parked_readings.py): non-premium readings ingest pushed back,
    # kept per region until it takes them, so the MQTT bridge can acknowledge their messages.
    def parked(self, region: str) -> str:
        """List of a region's parked reading batches (msgpack, columnar), oldest at the head."""
        return f"{self.prefix}:parked:{region}"

    def parked_claimed(self, region: str, consumer: str) -> str:
        """List of a region's parked batches one consumer (a bridge) is offering to ingest."""
        return f"{self.prefix}:parked:{region}:claimed:{consumer}"

    @property
    def parked_consumers(self) -> str:
        """Set of the consumers that have claimed parked batches (to find dead ones)."""
        return f"{self.prefix}:parked-consumers"

    def parked_lease(self, consumer: str) -> str:
        """Present (with a TTL) while a consumer is alive; its claims are rescued once gone."""
        return f"{self.prefix}:parked-lease:{consumer}"
