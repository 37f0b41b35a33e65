"""Background work for mount snapshots. Each task takes an id, calls one service
function and is safe to run twice."""

from celery import shared_task
from django.conf import settings

from cacheweb import outbox
from mounts import services

CONFIRM = "mounts.confirm_snapshot_upload"
INDEX_SNAPSHOT = "mounts.index_snapshot_contents"


@shared_task(name=CONFIRM, bind=True, max_retries=None, ignore_result=True, **outbox.RETRY_OPTIONS)
@outbox.tracked(lambda self, snapshot_id: outbox.task_key(CONFIRM, snapshot_id))
def confirm_snapshot_upload(self, snapshot_id):
    """Poll until the snapshot's blob has arrived or its upload URL has expired."""
    if services.confirm_snapshot_upload(snapshot_id) == services.PENDING:
        countdown = services.next_confirmation_delay(snapshot_id)
        outbox.defer(outbox.task_key(CONFIRM, snapshot_id), countdown)
        raise self.retry(countdown=countdown)


@shared_task(name="mounts.sweep_pending_snapshots", ignore_result=True)
def sweep_pending_snapshots():
    """Periodic safety net for confirmations that were lost."""
    services.sweep_pending_snapshots()


# The indexer bounds itself; the hard limit only catches a worker stuck outside it
# (a storage read that never returns).
@shared_task(
    name=INDEX_SNAPSHOT,
    ignore_result=True,
    time_limit=settings.CONTENTS_INDEX_MAX_SECONDS * 2 + 60,
    max_retries=8,
    **outbox.RETRY_OPTIONS,
)
@outbox.tracked(lambda snapshot_id, force=False: outbox.task_key(INDEX_SNAPSHOT, snapshot_id))
def index_snapshot_contents(snapshot_id, force=False):
    services.index_snapshot_contents(snapshot_id, force=force)
