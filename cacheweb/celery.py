import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cacheweb.settings")

app = Celery("cacheweb")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

app.conf.beat_schedule = {
    "worker-heartbeat": {"task": "cacheweb.tasks.heartbeat", "schedule": 30.0},
    # Settles mount uploads whose confirmation task was lost; drops week-old failures.
    "mounts-sweep-pending": {"task": "mounts.sweep_pending_snapshots", "schedule": 600.0},
    # Upload temp files left by workers killed mid-upload.
    "blobs-sweep-partial": {"task": "blobs.tasks.sweep_partial_uploads", "schedule": 3600.0},
}
