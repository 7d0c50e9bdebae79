"""Given rollups and incidents in Redis and the machine's real PostgreSQL, the export
writes closed minutes into day partitions and incidents into their table, and a re-run
writes nothing twice. Each test owns a schema of its own, dropped afterwards."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import fakeredis
import numpy as np
import psycopg
import pytest

from scheduler.rollup import compute_rollups
from stores.keys import Keys
from stores.postgres_export import PostgresExporter
from stores.redis_state import RedisStateStore
from stores.rollup_reader import RollupReader

DSN = os.environ.get("IOTSCHED_TEST_POSTGRES_DSN", "postgresql://127.0.0.1:5432/test")
KEYS = Keys("pgexport")
DAY = 1_800_000_000 - 1_800_000_000 % 86_400
LAST_MINUTE_OF_DAY = DAY + 86_400 - 60


@pytest.fixture
def pg() -> Iterator[tuple[psycopg.Connection[Any], str]]:
    try:
        conn = psycopg.connect(DSN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required under CI ({DSN}): {exc}")
        pytest.skip(f"no PostgreSQL at {DSN}")
    schema = f"iotsched_test_{uuid.uuid4().hex[:10]}"
    try:
        yield conn, schema
    finally:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        conn.close()


def write(
    client: fakeredis.FakeRedis,
    writer: str,
    batch: str,
    rows: list[tuple[int, float, float, float]],
) -> None:
    store = RedisStateStore(client, KEYS)
    store.writer = writer
    dev, ts, a, b = zip(*rows, strict=True)
    values = np.column_stack((a, b))
    delta = compute_rollups(np.array(dev, dtype=np.uint64), np.array(ts), values)
    store.apply_batch(batch, "premium", delta, {}, len(rows))


def test_closed_minutes_land_in_day_partitions_once(
    pg: tuple[psycopg.Connection[Any], str],
) -> None:
    conn, schema = pg
    client = fakeredis.FakeRedis()
    # Given two writers, a minute on each side of midnight, two metrics
    write(
        client,
        "w1",
        "b1",
        [(7, LAST_MINUTE_OF_DAY + 1, 1.0, 10.0), (8, LAST_MINUTE_OF_DAY + 2, 2.0, 20.0)],
    )
    write(
        client,
        "w2",
        "b2",
        [(7, LAST_MINUTE_OF_DAY + 30, 3.0, 30.0), (7, DAY + 86_400 + 5, 4.0, 40.0)],
    )
    reader = RollupReader(client, KEYS, 2)
    exporter = PostgresExporter(conn, ("temp", "hum"), schema)
    exporter.create_schema()
    now = DAY + 86_400 + 60 + 121

    # When exported, then exported again
    first = exporter.export(reader, now, grace_s=120)
    again = exporter.export(reader, now, grace_s=120)
    exporter.conn.execute(f'UPDATE "{schema}".export_watermark SET minute_ts = 0')
    forced = exporter.export(reader, now, grace_s=120)

    # Then every (minute, device) is one row, merged across writers, in its day's partition
    assert (first.minutes, first.rows_read, first.rows_written) == (2, 3, 3)
    assert (again.minutes, again.rows_written) == (0, 0)
    assert (forced.minutes, forced.rows_read, forced.rows_written) == (2, 3, 0)
    rows = conn.execute(
        f"SELECT tableoid::regclass::text, extract(epoch from minute)::bigint, device_id, count, "
        f'temp_sum, temp_min, temp_max, temp_last, hum_max FROM "{schema}".rollups ORDER BY 2, 3'
    ).fetchall()
    day1 = f"{schema}.rollups_p{np.datetime64(DAY, 's').astype(object):%Y%m%d}"
    day2 = f"{schema}.rollups_p{np.datetime64(DAY + 86_400, 's').astype(object):%Y%m%d}"
    assert rows == [
        (day1, LAST_MINUTE_OF_DAY, 7, 2, 4.0, 1.0, 3.0, 3.0, 30.0),
        (day1, LAST_MINUTE_OF_DAY, 8, 1, 2.0, 2.0, 2.0, 2.0, 20.0),
        (day2, DAY + 86_400, 7, 1, 4.0, 4.0, 4.0, 4.0, 40.0),
    ]


def test_open_minutes_wait_for_their_grace(pg: tuple[psycopg.Connection[Any], str]) -> None:
    conn, schema = pg
    client = fakeredis.FakeRedis()
    write(client, "w1", "b1", [(7, DAY + 1, 1.0, 1.0)])
    exporter = PostgresExporter(conn, ("temp", "hum"), schema)
    exporter.create_schema()
    reader = RollupReader(client, KEYS, 2)

    assert exporter.export(reader, DAY + 60 + 119, grace_s=120).minutes == 0
    assert exporter.export(reader, DAY + 60 + 120, grace_s=120).rows_written == 1


def incident(status: str, devices: list[int]) -> dict[str, object]:
    return {
        "incident_id": "i1", "status": status, "severity": "page", "region": "eu-west",
        "group": "g1", "device_count": len(devices), "device_ids": devices,
        "sample_device_ids": devices[:2], "first_seen_ts": DAY + 1.0, "last_seen_ts": DAY + 9.0,
        "open": status != "resolved",
    }  # fmt: skip


def test_incidents_are_upserted_with_their_latest_state(
    pg: tuple[psycopg.Connection[Any], str],
) -> None:
    conn, schema = pg
    exporter = PostgresExporter(conn, ("value",), schema)
    exporter.create_schema()

    assert exporter.write_incidents([incident("firing", [1, 2])]) == 1
    assert exporter.write_incidents([incident("firing", [1, 2])]) == 0  # unchanged: nothing
    assert exporter.write_incidents([incident("resolved", [1, 2, 3])]) == 1

    rows = conn.execute(
        f'SELECT incident_id, status, is_open, device_ids, device_count FROM "{schema}".incidents'
    ).fetchall()
    assert rows == [("i1", "resolved", False, [1, 2, 3], 3)]
