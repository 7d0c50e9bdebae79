"""The app with every task registered: what ``celery -A tasks.all:app worker`` loads."""

import tasks.routine  # noqa: F401  (registers the task)
from tasks.app import app

__all__ = ["app"]
