"""The app with every task registered: what ``celery -A tasks.all:app worker`` loads."""

# Each import registers its tasks on the app.
import tasks.accelerate
import tasks.anomaly
import tasks.dropout
import tasks.maintenance
import tasks.routine
import tasks.screen  # noqa: F401
from tasks.app import app
from tasks.message_guard import install_message_guard
from workers.heartbeat import install_heartbeat
from workers.inflight_reaper import install_inflight_reaper

# Region data workers heartbeat into Redis; placement reads it as region health.
install_heartbeat(app)
# Routine batches the broker lost (a worker killed mid-fetch) are published again.
install_inflight_reaper(app)
# A task message of the wrong shape is dead-lettered instead of stopping the worker.
install_message_guard(app)

__all__ = ["app"]
