"""Alert sinks: the webhook against a local HTTP server (with retries), the stream, the log."""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import fakeredis
import pytest

from alerts.config import sinks_from_settings
from alerts.document import alert_document
from alerts.log_sink import LogSink
from alerts.stream_sink import MemorySink, RedisStreamSink, read_alerts
from alerts.webhook_sink import WebhookSink
from scheduler.errors import PermanentError, TransientError
from scheduler.incident import Incident, IncidentUpdate
from scheduler.settings import Settings
from scheduler.severity import Severity
from stores.keys import Keys


def _update(status: str = "firing", devices: int = 12) -> IncidentUpdate:
    incident = Incident(
        incident_id="abc123",
        group="7",
        region="eu-west",
        device_count=devices,
        sample_device_ids=(1, 2, 3),
        first_seen_ts=1_000.0,
        last_seen_ts=1_002.0,
        severity=Severity.WARNING,
        cascade_id=None,
        alert_count=devices,
        kinds=(("spike", devices),),
    )
    return IncidentUpdate(status, incident, at_ts=1_000.25)


class _Receiver:
    """A local HTTP server answering from a script of status codes (then 200)."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = list(statuses)
        self.bodies: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                if status == 200:
                    receiver.bodies.append(json.loads(body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> _Receiver:
        self.thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def sleeps() -> list[float]:
    return []


def test_alert_document_carries_what_an_operator_needs() -> None:
    # Given a first notification a quarter second after the first anomalous reading
    doc = alert_document(_update("firing"))
    # Then it names the incident, its breadth, group, region, times, severity and latency
    assert doc["incident_id"] == "abc123"
    assert doc["device_count"] == 12 and doc["sample_device_ids"] == [1, 2, 3]
    assert (doc["group"], doc["region"]) == ("7", "eu-west")
    assert (doc["first_seen_ts"], doc["last_seen_ts"]) == (1_000.0, 1_002.0)
    assert doc["severity"] == "warning"
    assert doc["detection_latency_ms"] == 250.0
    assert json.loads(json.dumps(doc)) == doc


def test_webhook_posts_json(sleeps: list[float]) -> None:
    # Given a receiver that accepts everything
    with _Receiver([]) as receiver:
        # When two notifications are emitted
        WebhookSink(receiver.url, sleep=sleeps.append).emit(
            [alert_document(_update("firing")), alert_document(_update("updated", 40))]
        )
    # Then both arrive as JSON, in order, with no retry
    assert [b["status"] for b in receiver.bodies] == ["firing", "updated"]
    assert receiver.bodies[1]["device_count"] == 40
    assert sleeps == []


def test_webhook_retries_server_errors_with_backoff(sleeps: list[float]) -> None:
    # Given a receiver that fails twice with 503 before accepting
    with _Receiver([503, 503]) as receiver:
        # When a notification is emitted
        WebhookSink(receiver.url, attempts=3, backoff_s=0.01, sleep=sleeps.append).emit(
            [alert_document(_update())]
        )
    # Then it is delivered once, after two backoffs that double
    assert len(receiver.bodies) == 1
    assert sleeps == [0.01, 0.02]


def test_webhook_gives_up_after_its_attempts(sleeps: list[float]) -> None:
    # Given a receiver that always answers 500
    with _Receiver([500] * 5) as receiver:
        sink = WebhookSink(receiver.url, attempts=3, backoff_s=0.01, sleep=sleeps.append)
        # When a notification is emitted, Then a transient error says it was not delivered
        with pytest.raises(TransientError, match="3 attempts"):
            sink.emit([alert_document(_update())])
    assert receiver.bodies == [] and len(sleeps) == 2


def test_webhook_does_not_retry_a_rejection(sleeps: list[float]) -> None:
    # Given a receiver that rejects the document with 400
    with _Receiver([400]) as receiver:
        sink = WebhookSink(receiver.url, sleep=sleeps.append)
        # Then the error is permanent and no retry was made
        with pytest.raises(PermanentError, match="400"):
            sink.emit([alert_document(_update())])
    assert sleeps == []


def test_webhook_unreachable_is_transient(sleeps: list[float]) -> None:
    # Given nothing listening on the port
    with _Receiver([]) as receiver:
        url = receiver.url
    sink = WebhookSink(url, attempts=2, timeout_s=0.5, backoff_s=0.01, sleep=sleeps.append)
    # Then emitting fails as transient after its attempts
    with pytest.raises(TransientError):
        sink.emit([alert_document(_update())])
    assert sleeps == [0.01]


def test_stream_sink_appends_bounded_entries() -> None:
    # Given a stream sink bounded to exactly 10 entries
    client = fakeredis.FakeRedis()
    keys = Keys("t")
    sink = RedisStreamSink(client, keys, maxlen=10, approximate=False)
    # When 30 notifications are emitted
    sink.emit([alert_document(_update()) for _ in range(30)])
    # Then the stream holds the last 10, readable as documents
    assert client.xlen(keys.alerts) == 10
    docs = read_alerts(client, keys, count=5)
    assert len(docs) == 5 and docs[-1]["incident_id"] == "abc123"


def test_log_sink_logs_each_notification(caplog: pytest.LogCaptureFixture) -> None:
    # When a notification is logged
    with caplog.at_level(logging.WARNING, logger="iotsched.alerts"):
        LogSink().emit([alert_document(_update())])
    # Then one line names the incident and its status
    assert len(caplog.records) == 1
    assert "abc123 firing" in caplog.records[0].getMessage()


def test_sinks_follow_settings() -> None:
    client = fakeredis.FakeRedis()
    # Given no webhook URL: the stream and the log
    names = [s.name for s in sinks_from_settings(Settings(), client)]
    assert names == ["stream", "log"]
    # Given a webhook URL and no Redis: memory, log and the webhook
    env = {"IOTSCHED_ALERT_WEBHOOK_URL": "http://127.0.0.1:1/hook"}
    sinks = sinks_from_settings(Settings.from_env(env), None)
    assert [s.name for s in sinks] == ["memory", "log", "webhook"]
    assert isinstance(sinks[0], MemorySink)
