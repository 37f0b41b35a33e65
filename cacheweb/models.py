from django.db import models


class WorkerHeartbeat(models.Model):
    """Written by a periodic Celery task: proof that a worker consumes the broker."""

    hostname = models.CharField(max_length=255, unique=True)
    beat_at = models.DateTimeField()

    def __str__(self):
        return f"{self.hostname} at {self.beat_at:%Y-%m-%d %H:%M:%S}"
