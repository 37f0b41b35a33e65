from django.apps import AppConfig


class ActivityConfig(AppConfig):
    name = "activity"
    verbose_name = "activity"

    def ready(self):
        from activity import attribution, receivers  # noqa: F401  (attribution connects its own receiver)
        from blobs.models import Blob
        from blobs.signals import blob_verified

        blob_verified.connect(receivers.count_verified_upload, sender=Blob, dispatch_uid="activity.verified_upload")
