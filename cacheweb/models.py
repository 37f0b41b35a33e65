from django.db import models


class WorkerHeartbeat(models.Model):
    """Written by a periodic Celery task: proof that a worker consumes the broker."""

    hostname = models.CharField(max_length=255, unique=True)
    beat_at = models.DateTimeField()

    def __str__(self):
        return f"{self.hostname} at {self.beat_at:%Y-%m-%d %H:%M:%S}"


class OutboxTask(models.Model):
    """Work a commit made due (rebuild an import, confirm a mount upload, index contents),
    written in the committing transaction and deleted by the task once it has run: a
    broker that is down when the commit publishes delays the work, never drops it
    (cacheweb.outbox). One row per `key`, so repeated changes coalesce."""

    key = models.CharField(max_length=200, unique=True)
    task = models.CharField(max_length=200)
    args = models.JSONField(default=list)
    kwargs = models.JSONField(default=dict)
    # Bumped by every enqueue; a task deletes the row only if no enqueue came after it
    # started (`started` is the version it saw).
    version = models.PositiveBigIntegerField(default=1)
    started = models.PositiveBigIntegerField(default=0)
    # When the sweep publishes it (again) if it is still here by then.
    next_attempt_at = models.DateTimeField(db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return self.key
