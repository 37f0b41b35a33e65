"""Keep the graph honest when blobs go away (the blob app deletes rows on eviction)."""

from django.db.models import QuerySet
from django.db.models.signals import post_delete
from django.dispatch import receiver

from blobs.models import Blob
from blobs.signals import blob_lost


@receiver(post_delete, sender=Blob, dispatch_uid="records-blob-deleted")
def blob_deleted(sender, instance, origin=None, **kwargs):
    # Only deletions of blobs themselves: when a whole organization is deleted, its
    # records go too and there is nothing to mark.
    if not (isinstance(origin, Blob) or (isinstance(origin, QuerySet) and origin.model is Blob)):
        return
    from records.services import blobs_lost

    blobs_lost(instance.organization, [instance.digest])


@receiver(blob_lost, sender=Blob, dispatch_uid="records-blob-lost")
def blob_files_lost(sender, organization, digests, **kwargs):
    from records.services import blobs_lost

    blobs_lost(organization, digests)
