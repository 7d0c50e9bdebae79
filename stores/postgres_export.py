"""Rollups and incidents out to PostgreSQL (psycopg 3, COPY), idempotently.

Tables, in one schema (``iotsched`` by default; tests use one of their own):

- ``rollups``: one row per (minute, device_id), range-partitioned by day
  (``rollups_pYYYYMMDD``, created as minutes arrive); a closed minute's rows are COPYed
  into a temporary table and moved with ``INSERT ... ON CONFLICT DO NOTHING``.
- ``incidents``: one row per incident, upserted with its latest status and devices.
- ``export_watermark``: the last minute exported, written in the same transaction as
  that minute's rows, so an export killed half-way redoes exactly the unfinished minute
  and a re-run writes nothing twice.

A minute is exported once it has been over for ``grace_s``: batches of that minute still
in the queues then have had time to land. A batch that lands later still is not exported
(its minute is past the watermark); size ``grace_s`` above the worst queue wait.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from stores.rollup_reader import MinuteRollups, RollupReader

WATERMARK = "rollups"


@dataclass
class ExportResult:
    minutes: int = 0
    rows_read: int = 0
    rows_written: int = 0
    incidents: int = 0
    seconds: float = 0.0

    @property
    def rows_per_s(self) -> float:
        return self.rows_read / self.seconds if self.seconds > 0 else 0.0


class PostgresExporter:
    def __init__(
        self, conn: psycopg.Connection[Any], metrics: tuple[str, ...], schema: str = "iotsched"
    ) -> None:
        self.conn = conn
        self.metrics = metrics
        self.schema = schema
        self._partitions: set[str] = set()

    def _id(self, name: str) -> sql.Composed:
        return sql.SQL("{}.{}").format(sql.Identifier(self.schema), sql.Identifier(name))

    def _metric_columns(self) -> list[str]:
        return [f"{m}_{agg}" for m in self.metrics for agg in ("sum", "min", "max", "last")]

    def create_schema(self) -> None:
        metric_cols = sql.SQL(", ").join(
            sql.SQL("{} double precision NOT NULL").format(sql.Identifier(c))
            for c in self._metric_columns()
        )
        with self.conn.transaction():
            self.conn.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema))
            )
            self.conn.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (minute timestamptz NOT NULL, "
                    "device_id bigint NOT NULL, count bigint NOT NULL, "
                    "last_ts timestamptz NOT NULL, {}, PRIMARY KEY (minute, device_id)) "
                    "PARTITION BY RANGE (minute)"
                ).format(self._id("rollups"), metric_cols)
            )
            self.conn.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (incident_id text PRIMARY KEY, "
                    "status text NOT NULL, severity text, region text NOT NULL, "
                    '"group" text NOT NULL, device_count integer NOT NULL, '
                    "device_ids bigint[] NOT NULL, first_seen timestamptz NOT NULL, "
                    "last_seen timestamptz NOT NULL, is_open boolean NOT NULL, "
                    "document jsonb NOT NULL)"
                ).format(self._id("incidents"))
            )
            self.conn.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} "
                    "(name text PRIMARY KEY, minute_ts bigint NOT NULL)"
                ).format(self._id("export_watermark"))
            )

    def watermark(self) -> int | None:
        row = self.conn.execute(
            sql.SQL("SELECT minute_ts FROM {} WHERE name = %s").format(
                self._id("export_watermark")
            ),
            (WATERMARK,),
        ).fetchone()
        return int(row[0]) if row else None

    def _ensure_partition(self, minute_ts: int) -> None:
        day = datetime.fromtimestamp(minute_ts, UTC).replace(hour=0, minute=0, second=0)
        name = f"rollups_p{day:%Y%m%d}"
        if name in self._partitions:
            return
        self.conn.execute(
            sql.SQL("CREATE TABLE IF NOT EXISTS {} PARTITION OF {} FOR VALUES FROM (%s) TO (%s)")
            .format(self._id(name), self._id("rollups"))
            .as_string(self.conn)
            % (f"'{day.isoformat()}'", f"'{(day + timedelta(days=1)).isoformat()}'")
        )
        self._partitions.add(name)

    def write_minute(self, minute: MinuteRollups) -> int:
        """COPY one minute's rows and advance the watermark, in one transaction; rows new."""
        m = len(self.metrics)
        with self.conn.transaction():
            self._ensure_partition(minute.minute_ts)
            self.conn.execute(
                "CREATE TEMP TABLE IF NOT EXISTS export_stage (device_id bigint, minute_ts bigint, "
                "count bigint, last_ts double precision, "
                + ", ".join(f"c{i} double precision" for i in range(4 * m))
                + ") ON COMMIT DELETE ROWS"
            )
            rows = minute.rows
            with self.conn.cursor() as cur:
                with cur.copy("COPY export_stage FROM STDIN") as copy:
                    ids = minute.device_id.tolist()
                    for i, r in enumerate(rows.tolist()):
                        copy.write_row((ids[i], minute.minute_ts, int(r[0]), *r[1:]))
                stage_cols = sql.SQL(", ").join(
                    [
                        sql.SQL("to_timestamp(minute_ts)"),
                        sql.SQL("device_id"),
                        sql.SQL("count"),
                        sql.SQL("to_timestamp(last_ts)"),
                    ]
                    + [sql.Identifier(f"c{i}") for i in range(4 * m)]
                )
                # Packed rows hold sum, min, max, last per metric in blocks; the table
                # holds them per metric: map block b, metric j to column j*4+b.
                target = ["minute", "device_id", "count", "last_ts"] + [
                    f"{self.metrics[j]}_{agg}"
                    for b, agg in enumerate(("sum", "min", "max", "last"))
                    for j in range(m)
                ]
                cur.execute(
                    sql.SQL(
                        "INSERT INTO {} ({}) SELECT {} FROM export_stage ON CONFLICT DO NOTHING"
                    ).format(
                        self._id("rollups"),
                        sql.SQL(", ").join(sql.Identifier(c) for c in target),
                        stage_cols,
                    )
                )
                written = cur.rowcount
            self.conn.execute(
                sql.SQL(
                    "INSERT INTO {} (name, minute_ts) VALUES (%s, %s) ON CONFLICT (name) "
                    "DO UPDATE SET minute_ts = GREATEST({}.minute_ts, EXCLUDED.minute_ts)"
                ).format(self._id("export_watermark"), self._id("export_watermark")),
                (WATERMARK, minute.minute_ts),
            )
        return written

    def write_incidents(self, docs: Iterable[dict[str, Any]]) -> int:
        """Upsert each incident's latest state; an unchanged incident writes nothing."""
        n = 0
        with self.conn.transaction(), self.conn.cursor() as cur:
            for d in docs:
                cur.execute(
                    sql.SQL(
                        'INSERT INTO {} (incident_id, status, severity, region, "group", '
                        "device_count, device_ids, first_seen, last_seen, is_open, document) "
                        "VALUES (%s, %s, %s, %s, %s, %s, %s, "
                        "to_timestamp(%s), to_timestamp(%s), %s, %s) "
                        "ON CONFLICT (incident_id) DO UPDATE SET status = EXCLUDED.status, "
                        "severity = EXCLUDED.severity, device_count = EXCLUDED.device_count, "
                        "device_ids = EXCLUDED.device_ids, last_seen = EXCLUDED.last_seen, "
                        "is_open = EXCLUDED.is_open, document = EXCLUDED.document "
                        "WHERE {}.document IS DISTINCT FROM EXCLUDED.document"
                    ).format(self._id("incidents"), self._id("incidents")),
                    (
                        d["incident_id"], d["status"], d.get("severity"), d["region"], d["group"],
                        d["device_count"], d["device_ids"], d["first_seen_ts"], d["last_seen_ts"],
                        d["open"], json.dumps(d, sort_keys=True),
                    ),
                )  # fmt: skip
                n += cur.rowcount
        return n

    def export(
        self,
        reader: RollupReader,
        now_ts: float,
        grace_s: float,
        incidents: Callable[[], list[dict[str, Any]]] | None = None,
    ) -> ExportResult:
        """Every closed minute past the watermark, then the incidents."""
        started = time.perf_counter()
        result = ExportResult()
        for minute_ts in list(reader.closed_minutes(now_ts, grace_s, self.watermark())):
            minute = reader.minute(minute_ts)
            result.rows_read += len(minute.device_id)
            result.rows_written += self.write_minute(minute)
            result.minutes += 1
        if incidents is not None:
            result.incidents = self.write_incidents(incidents())
        result.seconds = time.perf_counter() - started
        return result
