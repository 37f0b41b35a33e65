from mounts import services


def commit_waiting_snapshots(sender, blob, **kwargs):
    """A built-in PUT (or an S3 confirmation) verified a blob: the snapshots waiting for
    it become current right away rather than at the next confirmation check."""
    services.commit_snapshots_for_blob(blob.organization_id, blob.digest, blob.size)
