from django.apps import AppConfig


class MountsConfig(AppConfig):
    name = "mounts"
    verbose_name = "synced cache mounts"

    def ready(self):
        from blobs.models import Blob
        from blobs.signals import blob_verified
        from mounts.receivers import commit_waiting_snapshots

        blob_verified.connect(commit_waiting_snapshots, sender=Blob, dispatch_uid="mounts.commit_waiting_snapshots")
