from celery import shared_task
from django.conf import settings

from blobs.storage import get_store


@shared_task(name="blobs.tasks.sweep_partial_uploads", ignore_result=True)
def sweep_partial_uploads():
    """Remove upload temp files abandoned by killed workers (built-in storage only). An
    upload still running writes its file continuously, so a file untouched for a whole
    URL lifetime is abandoned."""
    store = get_store()
    if store.kind == "filesystem":
        store.sweep_partial(older_than=settings.BLOB_URL_LIFETIME)
