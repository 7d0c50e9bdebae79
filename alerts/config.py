"""The sinks a deployment notifies, from its settings."""

from __future__ import annotations

import redis

from alerts.alertmanager_sink import AlertmanagerSink
from alerts.document import AlertSink
from alerts.log_sink import LogSink
from alerts.stream_sink import MemorySink, RedisStreamSink
from alerts.webhook_sink import WebhookSink
from scheduler.settings import Settings
from stores.keys import Keys


def sinks_from_settings(settings: Settings, client: redis.Redis | None) -> list[AlertSink]:
    """The Redis stream (or, with no Redis, an in-memory list), the log, and the webhook
    when ``IOTSCHED_ALERT_WEBHOOK_URL`` is set, Alertmanager when ``IOTSCHED_ALERTMANAGER_URL``
    is."""
    sinks: list[AlertSink] = [
        RedisStreamSink(client, Keys(settings.key_prefix)) if client is not None else MemorySink(),
        LogSink(),
    ]
    if settings.alert_webhook_url:
        sinks.append(WebhookSink(settings.alert_webhook_url))
    if settings.alertmanager_url:
        sinks.append(AlertmanagerSink(settings.alertmanager_url))
    return sinks
