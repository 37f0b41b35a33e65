from celery import shared_task
from django.conf import settings

from accounts.models import Organization
from cacheweb import outbox
from records import importconfig, layer_contents

REBUILD = "records.tasks.rebuild_import"
INDEX_LAYER = "records.tasks.index_layer_contents"


@shared_task(name=REBUILD, ignore_result=True, max_retries=8, **outbox.RETRY_OPTIONS)
@outbox.tracked(lambda organization_id: outbox.task_key(REBUILD, organization_id))
def rebuild_import(organization_id):
    """Precompute an organization's /import after a change. Safe to run twice: a build
    for an older generation never overwrites a newer one. While another process builds it
    this does nothing: that builder looks at the generation again after its build and
    folds this change into its next round (importconfig.rebuild)."""
    organization = Organization.objects.filter(pk=organization_id).first()
    if organization is not None:
        importconfig.rebuild(organization)


# The indexer bounds itself; the hard limit only catches a worker stuck outside it.
@shared_task(
    name=INDEX_LAYER,
    ignore_result=True,
    time_limit=settings.CONTENTS_INDEX_MAX_SECONDS * 2 + 60,
    max_retries=8,
    **outbox.RETRY_OPTIONS,
)
@outbox.tracked(lambda layer_id: outbox.task_key(INDEX_LAYER, layer_id))
def index_layer_contents(layer_id):
    layer_contents.index_layer(layer_id)
