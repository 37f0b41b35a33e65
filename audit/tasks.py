import logging

from celery import shared_task
from django.conf import settings

from audit import services
from retention.services import prune_passes

log = logging.getLogger("cacheweb.audit")


@shared_task(name="audit.prune", ignore_result=True)
def prune():
    """Daily: audit entries and storage lifecycle pass records older than CACHEWEB_AUDIT_DAYS go."""
    entries = services.prune()
    passes = prune_passes()
    if entries or passes:
        log.info("pruned %d audit entries and %d pass records older than %d days", entries, passes, settings.AUDIT_DAYS)
