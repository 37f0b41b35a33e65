from django.db.models import QuerySet
from django.utils import timezone

from mounts import services
from mounts.models import MountSnapshot


def commit_waiting_snapshots(sender, blob, **kwargs):
    """A built-in PUT (or an S3 confirmation) verified a blob: the snapshots waiting for
    it become current right away rather than at the next confirmation check."""
    services.commit_snapshots_for_blob(blob.organization_id, blob.digest, blob.size)


def _release_live_snapshots(organization_id, digests):
    # A snapshot whose bytes are gone cannot be restored. Left current, it would also make
    # the engine's next offer of those same bytes "unchanged", so they would never come
    # back; released, the mount falls back to an older snapshot and takes the upload.
    # Only verified ones: a pending snapshot never had the bytes, and its upload in flight
    # brings the row back; released, it would be committed released and never current.
    MountSnapshot.objects.live().filter(mount__organization_id=organization_id, digest__in=digests).update(
        released_at=timezone.now()
    )


def release_snapshots_of_deleted_blob(sender, instance, origin=None, **kwargs):
    """A blob evicted (dashboard, retention): its snapshots are released. Not when the
    whole organization is being deleted: its snapshots go with it."""
    if isinstance(origin, sender) or (isinstance(origin, QuerySet) and origin.model is sender):
        _release_live_snapshots(instance.organization_id, [instance.digest])


def release_snapshots_of_lost_blobs(sender, organization, digests, **kwargs):
    """Blob files found missing or cut short: their snapshots are released too."""
    _release_live_snapshots(organization.pk, digests)
