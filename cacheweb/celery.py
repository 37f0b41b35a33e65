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
    # Hourly activity rows older than CACHEWEB_ACTIVITY_DAYS become day rows.
    "activity-roll-up": {"task": "activity.roll_up", "schedule": 3600.0},
    # What each organization stores, for the storage-over-time charts.
    "activity-storage-samples": {"task": "activity.storage_samples", "schedule": 3600.0},
}


@app.on_after_configure.connect
def _schedule_from_settings(sender, **kwargs):
    # Garbage collection and eviction (retention.services), every CACHEWEB_GC_INTERVAL.
    # Added once Celery has loaded its configuration rather than in the dict above: that
    # runs while the cacheweb package (settings.py's own package) is still importing.
    from django.conf import settings

    sender.add_periodic_task(
        float(settings.GC_INTERVAL), sender.signature("retention.collect_garbage"), name="retention-gc"
    )
