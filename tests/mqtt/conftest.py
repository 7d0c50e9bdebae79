"""A real MQTT broker for the bridge tests: the machine's Mosquitto (127.0.0.1:1883), or a
private ``mosquitto`` on a free port when none answers. Skipped locally (failed under CI)
when neither is there. Each test gets its own topic prefix and subscription group, so
tests sharing the broker never see each other's messages."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator

import pytest

IN_CI = bool(os.environ.get("CI"))
SHARED = ("127.0.0.1", 1883)


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def mqtt_url() -> Iterator[str]:
    if _answers(*SHARED):
        yield f"mqtt://{SHARED[0]}:{SHARED[1]}"
        return
    yield from _private_mosquitto()


@pytest.fixture(scope="session")
def private_mqtt_url() -> Iterator[str]:
    """A private mosquitto set up as the README asks (``max_queued_messages 0``): the
    broker keeps every message of a session whose bridge is down or behind."""
    yield from _private_mosquitto()


def _private_mosquitto() -> Iterator[str]:
    binary = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None
    )
    if binary is None:
        if IN_CI:
            pytest.fail("an MQTT broker (mosquitto) is required under CI")
        pytest.skip("mosquitto is not installed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    workdir = tempfile.mkdtemp(prefix="iotsched-mqtt-")
    conf = os.path.join(workdir, "mosquitto.conf")
    with open(conf, "w") as f:
        f.write(f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n")
    proc = subprocess.Popen(
        [binary, "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 10
    while not _answers("127.0.0.1", port):
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("private mosquitto did not start")
        time.sleep(0.05)
    yield f"mqtt://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def topic_root() -> str:
    """A topic prefix (and subscription group name) of this test's own."""
    return f"t{uuid.uuid4().hex[:10]}"
