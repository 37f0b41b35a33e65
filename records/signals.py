"""Keep the graph honest when blobs go away (the blob app deletes rows on eviction)."""

from django.db.models.signals import post_delete
from django.dispatch import receiver

from blobs.models import Blob


@receiver(post_delete, sender=Blob, dispatch_uid="records-blob-deleted")
def blob_deleted(sender, instance, **kwargs):
    from records.services import blobs_lost

    blobs_lost(instance.organization, [instance.digest])
