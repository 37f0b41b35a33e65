from django.apps import AppConfig


class MountsConfig(AppConfig):
    name = "mounts"
    verbose_name = "synced cache mounts"

    def ready(self):
        from django.db.models.signals import post_delete

        from blobs.models import Blob
        from blobs.signals import blob_lost, blob_verified
        from mounts import receivers

        blob_verified.connect(
            receivers.commit_waiting_snapshots, sender=Blob, dispatch_uid="mounts.commit_waiting_snapshots"
        )
        post_delete.connect(
            receivers.release_snapshots_of_deleted_blob, sender=Blob, dispatch_uid="mounts.release_deleted"
        )
        blob_lost.connect(receivers.release_snapshots_of_lost_blobs, sender=Blob, dispatch_uid="mounts.release_lost")
