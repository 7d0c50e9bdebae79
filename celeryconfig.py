"""Celery settings for iotsched: declarations only; values come from scheduler.settings.

Queues are routed by name ({region}.{kind}); Redis message priorities are not used.
"""

from runtime.redis_transport import transport_for
from scheduler.settings import Settings
from stores.keys import Keys

_settings = Settings.from_env()

broker_url = _settings.effective_broker_url
# Redis brokers: kombu's transport, with acks that never wedge a worker (runtime.redis_transport).
broker_transport = transport_for(broker_url)
broker_connection_retry_on_startup = True
broker_transport_options = {
    # Take queues strictly in the worker's -Q order (anomaly, screen_premium, premium, screen,
    # standard): non-premium screening ranks below premium (scheduler.model.DATA_QUEUE_KINDS).
    "queue_order_strategy": "priority",
    # Broker keys share the deployment's prefix, so they are owned like the state keys.
    "global_keyprefix": Keys(_settings.key_prefix).broker_prefix,
    # A message held unacked this long is redelivered; batches take milliseconds.
    "visibility_timeout": _settings.visibility_timeout_s,
    # Recover messages of a killed worker within seconds, not the default ~100 s.
    "unacked_restore_interval": _settings.unacked_restore_interval_s,
    "unacked_restore_throttle": 1,
}

# msgpack carries the columnar payload as raw bytes; never accept pickle.
task_serializer = "msgpack"
accept_content = ["msgpack", "json"]
result_serializer = "json"
task_ignore_result = True

# Ack after the effects are applied; a killed worker's batch goes back to its queue.
task_acks_late = True
task_reject_on_worker_lost = True
# One message at a time per process, so queue order holds inside a worker.
worker_prefetch_multiplier = 1

task_default_queue = "default"
task_create_missing_queues = True
# Task events cost a publish per state change; Flower switches them on when it starts
# (its enable_events broadcast), so workers do not pay for them otherwise.
worker_send_task_events = False
task_send_sent_event = False
worker_hijack_root_logger = False

# `celery worker --autoscale MAX,MIN` sizes the pool from broker queue depth and forecast;
# IOTSCHED_AUTOSCALER=stock keeps Celery's own rule (reserved requests, keepalive).
worker_autoscaler = (
    "celery.worker.autoscale:Autoscaler"
    if _settings.autoscaler == "stock"
    else "workers.autoscaler:QueueDepthAutoscaler"
)
