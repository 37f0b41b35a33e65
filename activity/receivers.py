"""Counts that arrive as other apps' signals."""

from activity import recording
from activity.models import Signal
from mounts.models import MountSnapshot


def count_verified_upload(sender, blob, **kwargs):
    """A blob became verified: an upload arrived (built-in PUT or S3, confirmed). Counted
    once per blob, when it first becomes verified (blobs.signals.blob_verified), as a
    mount upload when a mount snapshot names the digest, else as a layer upload."""
    is_mount = MountSnapshot.objects.filter(mount__organization_id=blob.organization_id, digest=blob.digest).exists()
    count, size = (
        (Signal.MOUNT_UPLOADS, Signal.MOUNT_UPLOAD_BYTES) if is_mount else (Signal.LAYER_UPLOADS, Signal.LAYER_UPLOAD_BYTES)
    )
    recording.add(blob.organization_id, {count: 1, size: blob.size or 0})
