"""A private redis-server for fault runs: AOF on, its own port and directory, and the
faults an operator meets (SIGKILL, SIGSTOP, shutdown, restart on the same data)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import redis

from scheduler.errors import ConfigError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateRedis:
    def __init__(self, appendfsync: str = "everysec", binary: str | None = None) -> None:
        if appendfsync not in ("everysec", "always", "no"):
            raise ConfigError(f"appendfsync must be everysec, always or no, not {appendfsync!r}")
        found = binary or shutil.which("redis-server")
        if found is None:
            raise ConfigError("redis-server is not installed (apt-get install -y redis-server)")
        self.binary = found
        self.appendfsync = appendfsync
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="iotsched-faults-")
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=5, socket_connect_timeout=2)

    def start(self, timeout_s: float = 20.0) -> None:
        """Start (or start again, on the same AOF) and wait until it answers."""
        argv = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            self.dir,
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            self.appendfsync,
            "--maxmemory-policy",
            "noeviction",
        ]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        client = self.client()
        while True:
            try:
                client.ping()
                return
            except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

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
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
