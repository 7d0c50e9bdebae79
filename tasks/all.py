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

# Worker bootsteps are named, not imported (as celeryconfig names the autoscaler): they
# live in workers/, which imports tasks. Celery resolves them when a worker starts.
WORKER_STEPS = (
    # Region data workers heartbeat into Redis; placement reads it as region health.
    "workers.heartbeat:RegionHeartbeat",
    # Routine batches the broker lost (a worker killed mid-fetch) are published again.
    "workers.inflight_reaper:InflightReaperStep",
    # Workers consuming standard work lower their CPU priority before their pool forks.
    "workers.priority:RoutinePriority",
)
app.steps["worker"].update(WORKER_STEPS)
# A task message of the wrong shape is dead-lettered instead of stopping the worker.
install_message_guard(app)

__all__ = ["app"]
