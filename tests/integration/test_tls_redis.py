"""The README's ``rediss://`` example against a real TLS redis-server.

Given a private redis-server that speaks only TLS (throwaway CA and server
certificate, password required), when the CLI and a real Celery worker use
the URL exactly as the README spells it, then commands succeed and a batch
published by the Producer is consumed and applied; with the wrong CA, the CLI
fails with one line and no traceback.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis

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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _make_ca(d: Path, name: str) -> None:
    _openssl("genrsa", "-out", f"{name}.key", "2048", cwd=d)
    _openssl(
        "req",
        "-x509",
        "-new",
        "-key",
        f"{name}.key",
        "-days",
        "2",
        "-subj",
        f"/CN={name}",
        "-out",
        f"{name}.pem",
        cwd=d,
    )


def _make_certs(d: Path) -> None:
    """A CA, a server certificate it signs for 127.0.0.1, and an unrelated second CA."""
    _make_ca(d, "ca")
    _make_ca(d, "other-ca")
    _openssl("genrsa", "-out", "server.key", "2048", cwd=d)
    _openssl(
        "req", "-new", "-key", "server.key", "-subj", "/CN=127.0.0.1", "-out", "server.csr", cwd=d
    )
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.pem",
        cwd=d,
    )


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (required under CI)")
    pytest.skip(reason)


def _url(port: int, ca: Path) -> str:
    """The README's form, verbatim apart from host, port, password and CA path."""
    return f"rediss://:{PASSWORD}@127.0.0.1:{port}/0?ssl_cert_reqs=required&ssl_ca_certs={ca}"


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """(TLS port, certificate directory) of a private TLS-only redis-server."""
    binary = shutil.which("redis-server")
    if binary is None:
        _unavailable("redis-server is not installed")
    if shutil.which("openssl") is None:
        _unavailable("the openssl command is not installed")
    d = tmp_path_factory.mktemp("tls")
    _make_certs(d)
    port = _free_port()
    log_path = d / "redis.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                str(binary),
                "--port",
                "0",
                "--tls-port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--tls-cert-file",
                str(d / "server.pem"),
                "--tls-key-file",
                str(d / "server.key"),
                "--tls-ca-cert-file",
                str(d / "ca.pem"),
                "--tls-auth-clients",
                "no",
                "--requirepass",
                PASSWORD,
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(d),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    client = redis.Redis.from_url(_url(port, d / "ca.pem"))
    deadline = time.monotonic() + 10
    while True:
        if proc.poll() is not None:
            out = log_path.read_text(errors="replace")
            if "tls" in out.lower():  # a build without TLS rejects the tls-* options
                _unavailable(f"this redis-server has no TLS support: {out.strip()[-200:]}")
            raise AssertionError(f"redis-server exited: {out}")
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.05)
    client.close()
    yield port, d
    proc.terminate()
    proc.wait(10)


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
    tls_redis: tuple[int, Path], key_prefix: str
) -> None:
    port, d = tls_redis
    url = _url(port, d / "ca.pem")
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


def test_a_wrong_ca_fails_with_one_line(tls_redis: tuple[int, Path], key_prefix: str) -> None:
    port, d = tls_redis
    # When status is asked over TLS with a CA that did not sign the server's certificate
    done = _cli(_url(port, d / "other-ca.pem"), key_prefix, "status")
    # Then it fails with one line naming the TLS failure, password hidden, no traceback
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("iotsched status: cannot reach Redis at rediss://:***@"), lines[0]
    assert "(TLS handshake failed)" in lines[0]
    assert PASSWORD not in lines[0]
    assert "Traceback" not in done.stderr
