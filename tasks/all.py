"""The app with every task registered: what ``celery -A tasks.all:app worker`` loads."""

import tasks.routine  # noqa: F401  (registers the task)
from tasks.app import app
from workers.heartbeat import install_heartbeat

# Region data workers heartbeat into Redis; placement reads it as region health.
install_heartbeat(app)

__all__ = ["app"]
