from celery import shared_task

from accounts.models import Organization
from records import importconfig


@shared_task(name="records.tasks.rebuild_import", ignore_result=True)
def rebuild_import(organization_id):
    """Precompute an organization's /import after a change. Safe to run twice: a build
    for an older generation never overwrites a newer one."""
    organization = Organization.objects.filter(pk=organization_id).first()
    if organization is not None:
        importconfig.rebuild(organization)
