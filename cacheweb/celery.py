import logging
import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cacheweb.settings")

log = logging.getLogger("cacheweb.celery")


def _leave_unacked_when_detached():
    """Patch point (kombu 5.7.0, redis transport): keep a broker blip from killing the worker.

    When the worker's consumer restarts after a lost connection, a channel holding
    unacknowledged messages (tasks running with acks_late, tasks waiting for their ETA)
    can be closed after its connection has let go of the transport. Closing it then
    restores those messages through a client built from the transport's connection
    details, which are gone: AttributeError "'NoneType' object has no attribute
    'hostname'", which the worker treats as unrecoverable and exits. The messages are
    still in the broker's unacked set, and every worker restores unacked messages older
    than the visibility timeout (kombu's restore_visible), so skipping the restore here
    loses nothing; the outbox (cacheweb.outbox) publishes anything still due meanwhile."""
    from kombu.transport import redis as redis_transport

    original = redis_transport.QoS.restore_unacked
    if getattr(original, "cacheweb_patched", False):
        return

    def restore_unacked(self, client=None):
        if client is None and self.channel.connection.client is None:
            log.warning(
                "broker connection closed before its channel: %d unacknowledged message(s) left "
                "for the broker's visibility-timeout restore",
                len(self._delivered),
            )
            self._delivered.clear()
            return None
        return original(self, client)

    restore_unacked.cacheweb_patched = True
    redis_transport.QoS.restore_unacked = restore_unacked


_leave_unacked_when_detached()

app = Celery("cacheweb")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

app.conf.beat_schedule = {
    "worker-heartbeat": {"task": "cacheweb.tasks.heartbeat", "schedule": 30.0},
    # Publishes work recorded after a commit and not done yet (cacheweb.outbox): what a
    # broker outage or a lost message held back.
    "outbox-sweep": {"task": "cacheweb.tasks.sweep_outbox", "schedule": 30.0},
    # Settles mount uploads whose confirmation task was lost; drops week-old failures.
    "mounts-sweep-pending": {"task": "mounts.sweep_pending_snapshots", "schedule": 600.0},
    # Upload temp files left by workers killed mid-upload.
    "blobs-sweep-partial": {"task": "blobs.tasks.sweep_partial_uploads", "schedule": 3600.0},
    # Audit entries and lifecycle pass records older than CACHEWEB_AUDIT_DAYS.
    "audit-prune": {"task": "audit.prune", "schedule": 86400.0},
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
