"""A private redis-server on a free port: the one starter for benches and tests.

Plain (no persistence) for tests and benches, AOF on for fault runs (SIGKILL,
SIGSTOP, shutdown, restart on the same data), or TLS-only with a throwaway CA
and a password. It runs in its own temporary directory, which ``close`` removes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import redis

from bench.tls_files import TlsFiles
from scheduler.errors import ConfigError

APPENDFSYNC_CHOICES = ("everysec", "always", "no")


class RedisUnavailable(ConfigError):
    """Raised when no redis-server that can serve what was asked for (TLS) is installed."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Tls:
    """Serve TLS only, with this server certificate, and require this password."""

    files: TlsFiles
    password: str


class PrivateRedis:
    def __init__(
        self,
        appendfsync: str | None = None,
        binary: str | None = None,
        tls: Tls | None = None,
    ) -> None:
        """``appendfsync`` None: no persistence at all; else AOF on with that fsync policy."""
        if appendfsync is not None and appendfsync not in APPENDFSYNC_CHOICES:
            raise ConfigError(f"appendfsync must be everysec, always or no, not {appendfsync!r}")
        found = binary or shutil.which("redis-server")
        if found is None:
            raise RedisUnavailable(
                "redis-server is not installed (apt-get install -y redis-server)"
            )
        self.binary = found
        self.appendfsync = appendfsync
        self.tls = tls
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="iotsched-redis-")
        self.log_path = Path(self.dir) / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.tls is None:
            return f"redis://127.0.0.1:{self.port}/0"
        return self.tls_url(self.tls.files.ca)

    def tls_url(self, ca: Path) -> str:
        """The README's ``rediss://`` form, trusting ``ca`` (another CA must fail)."""
        assert self.tls is not None
        return (
            f"rediss://:{self.tls.password}@127.0.0.1:{self.port}/0"
            f"?ssl_cert_reqs=required&ssl_ca_certs={ca}"
        )

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=5, socket_connect_timeout=2)

    def argv(self) -> list[str]:
        argv = [self.binary, "--bind", "127.0.0.1", "--dir", self.dir, "--save", ""]
        if self.tls is None:
            argv += ["--port", str(self.port)]
        else:
            files = self.tls.files
            argv += ["--port", "0", "--tls-port", str(self.port)]
            argv += ["--tls-cert-file", str(files.cert), "--tls-key-file", str(files.key)]
            argv += ["--tls-ca-cert-file", str(files.ca), "--tls-auth-clients", "no"]
            argv += ["--requirepass", self.tls.password]
        if self.appendfsync is None:
            return [*argv, "--appendonly", "no"]
        return [
            *argv,
            "--appendonly",
            "yes",
            "--appendfsync",
            self.appendfsync,
            "--maxmemory-policy",
            "noeviction",
        ]

    def start(self, timeout_s: float = 20.0) -> None:
        """Start (or start again, on the same AOF) and wait until it answers."""
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        client = self.client()
        try:
            while True:
                if self.proc.poll() is not None:
                    self._exited()
                try:
                    client.ping()
                    return
                except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        finally:
            client.close()

    def _exited(self) -> None:
        out = self.log_path.read_text(errors="replace").strip()
        if self.tls is not None and "tls" in out.lower():
            # A build without TLS rejects the tls-* options.
            raise RedisUnavailable(f"this redis-server has no TLS support: {out[-200:]}")
        raise RuntimeError(f"redis-server exited: {out[-2000:]}")

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signum)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final fsync."""
        self.signal(signal.SIGKILL)
        assert self.proc is not None
        self.proc.wait()

    def shutdown(self) -> None:
        """A clean SHUTDOWN: the AOF is flushed and fsynced before it exits."""
        with contextlib.suppress(redis.ConnectionError, redis.TimeoutError):
            self.client().shutdown()
        assert self.proc is not None
        self.proc.wait(30)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PrivateRedis:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


@contextlib.contextmanager
def private_redis(url: str | None = None) -> Iterator[str]:
    """``url`` when given, else a throwaway redis-server on a free port for the duration."""
    if url:
        yield url
        return
    try:
        server = PrivateRedis()
    except RedisUnavailable as exc:
        raise RedisUnavailable(f"{exc}, or pass --redis-url") from exc
    with server:
        yield server.url
