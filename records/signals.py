"""Keep the graph honest when blobs go away (the blob app deletes rows on eviction)."""

from django.db.models import Q, QuerySet
from django.db.models.signals import post_delete, pre_delete
from django.dispatch import receiver

from blobs.models import Blob
from blobs.signals import blob_lost, blobs_used
from records.models import Layer, Record, Result


def _deleted_directly(origin, model):
    """Deleted for itself, not swept along by the deletion of its organization."""
    return isinstance(origin, model) or (isinstance(origin, QuerySet) and origin.model is model)


@receiver(post_delete, sender=Blob, dispatch_uid="records-blob-deleted")
def blob_deleted(sender, instance, origin=None, **kwargs):
    # Only deletions of blobs themselves: when a whole organization is deleted, its
    # records go too and there is nothing to mark.
    if not _deleted_directly(origin, Blob):
        return
    from records.services import blobs_lost

    blobs_lost(instance.organization, [instance.digest])


@receiver(blob_lost, sender=Blob, dispatch_uid="records-blob-lost")
def blob_files_lost(sender, organization, digests, **kwargs):
    from records.services import blobs_lost

    blobs_lost(organization, digests)


@receiver(pre_delete, sender=Layer, dispatch_uid="records-layer-deleted")
def layer_deleted(sender, instance, origin=None, **kwargs):
    # A result missing one layer of its chain is no longer complete: say so before the
    # chain rows go, so that /records asks for the record again.
    if _deleted_directly(origin, Layer):
        from records.services import blobs_lost

        blobs_lost(instance.organization, [instance.digest])


@receiver(pre_delete, sender=Record, dispatch_uid="records-record-deleted")
def record_deleted(sender, instance, origin=None, **kwargs):
    # A record's inputs are part of its identity: a record that loses one is not the same
    # record any more, so the records built on this one go with it (and are stored again,
    # whole, the next time an engine posts them).
    if _deleted_directly(origin, Record):
        dependants = Record.objects.filter(inputs__source=instance).exclude(pk=instance.pk).distinct()
        for dependant in dependants:
            dependant.delete()


@receiver(blobs_used, sender=Blob, dispatch_uid="records-blobs-used")
def top_layers_used(sender, uses, **kwargs):
    # A step is used when an engine pulls its own layer: keep that on the result, where
    # the steps listing sorts and filters by it.
    for org_id, digest, last in uses:
        Result.objects.filter(record__organization_id=org_id, top_digest=digest).filter(
            Q(last_used_at__isnull=True) | Q(last_used_at__lt=last)
        ).update(last_used_at=last)
