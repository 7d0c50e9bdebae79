"""Alert sinks: where incident notifications go (a Redis stream, a webhook, the log).

Every sink takes the same JSON-ready document (``alert_document``), so a consumer of
the stream and a webhook receiver read the same fields.
"""

from alerts.document import AlertSink, alert_document

__all__ = ["AlertSink", "alert_document"]
