import atexit

from django.apps import AppConfig


class BlobsConfig(AppConfig):
    name = "blobs"
    verbose_name = "blobs"

    def ready(self):
        from blobs.services import flush_uses

        # Use counts are buffered per process (see services.record_use).
        atexit.register(flush_uses)
