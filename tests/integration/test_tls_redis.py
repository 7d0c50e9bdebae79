"""The README's ``rediss://`` example against a real TLS redis-server.

Given a private redis-server that speaks only TLS (throwaway CA and server
certificate, password required), when the CLI and a real Celery worker use
the URL exactly as the README spells it, then commands succeed and a batch
published by the Producer is consumed and applied; with the wrong CA, the CLI
fails with one line and no traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import NoReturn

import numpy as np
import pytest
import redis

from bench.redis_server import PrivateRedis, RedisUnavailable, Tls
from bench.tls_files import OpensslUnavailable, make_tls_files
from ingest.celery_publisher import CeleryPublisher
from ingest.producer import Producer
from scheduler.batching import BatchingConfig
from stores.inflight import InflightLedger
from stores.keys import Keys
from stores.protocols import processed_readings
from stores.redis_state import RedisStateStore
from tasks.app import broker_app
from workers.cluster import PROJECT_ROOT, LocalCluster

pytestmark = pytest.mark.integration

PASSWORD = "tls-test-pw"
IN_CI = bool(os.environ.get("CI"))  # as tests/conftest.py: a missing tool fails under CI


def _unavailable(reason: str) -> NoReturn:
    if IN_CI:
        pytest.fail(f"{reason} (required under CI)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    """A private TLS-only redis-server (throwaway CA and certificate, password required)."""
    try:
        files = make_tls_files(tmp_path_factory.mktemp("tls"))
        server = PrivateRedis(tls=Tls(files, PASSWORD))
    except (RedisUnavailable, OpensslUnavailable) as exc:
        _unavailable(str(exc))
    try:
        server.start(timeout_s=10)
    except RedisUnavailable as exc:
        server.close()
        _unavailable(str(exc))
    yield server
    server.close()


def _cli(url: str, prefix: str, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "IOTSCHED_REDIS_URL": url, "IOTSCHED_KEY_PREFIX": prefix}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "iotsched.cli", *argv],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_and_a_worker_run_over_tls_with_the_readme_url(
    tls_redis: PrivateRedis, key_prefix: str
) -> None:
    # The README's form, verbatim apart from host, port, password and CA path
    url = tls_redis.url
    # When the registry is generated and status read over TLS
    made = _cli(url, key_prefix, "registry", "generate", "--devices", "1000")
    assert made.returncode == 0, made.stderr
    status = _cli(url, key_prefix, "status")
    assert status.returncode == 0, status.stderr
    # Then the registry is in the TLS Redis
    keys = Keys(key_prefix)
    client = redis.Redis.from_url(url)
    store = RedisStateStore(client, keys)
    registry = store.load_registry()
    assert registry is not None and len(registry.device_id) == 1000
    # When the Producer publishes over TLS and a real eu-west worker consumes it
    app = broker_app(url, keys)
    cluster = LocalCluster(url, key_prefix, ("eu-west",), concurrency=1)
    try:
        producer = Producer(
            lambda: registry,
            CeleryPublisher(app, ledger=InflightLedger(client, keys)),
            store,
            batching=BatchingConfig(max_readings=100),
        )
        ids = registry.device_id[registry.home_region == 0]
        assert len(ids) > 0
        producer.ingest_columns(ids, np.full(len(ids), time.time()), np.ones(len(ids)))
        producer.flush()
        cluster.start()
        deadline = time.monotonic() + 40
        while processed_readings(store.counters()) < len(ids):
            assert time.monotonic() < deadline, f"only {store.counters()} of {len(ids)} processed"
            time.sleep(0.05)
        # Then every reading was applied once, its rollups included
        assert processed_readings(store.counters()) == len(ids)
        assert store.rollup_count_total() == len(ids)
    finally:
        cluster.stop()
        app.close()
        store.delete_all()
        client.close()


def test_a_wrong_ca_fails_with_one_line(tls_redis: PrivateRedis, key_prefix: str) -> None:
    # When status is asked over TLS with a CA that did not sign the server's certificate
    done = _cli(tls_redis.tls_url(tls_redis.tls.files.other_ca), key_prefix, "status")
    # Then it fails with one line naming the TLS failure, password hidden, no traceback
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("iotsched status: cannot reach Redis at rediss://:***@"), lines[0]
    assert "(TLS handshake failed)" in lines[0]
    assert PASSWORD not in lines[0]
    assert "Traceback" not in done.stderr
