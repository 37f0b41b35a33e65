"""What engines and operators did, counted per organization, engine and hour.

One narrow table of counters: a row per (organization, engine, period, start, name,
label). Hourly rows are written by the engine paths; old hours roll up into days
(CACHEWEB_ACTIVITY_DAYS). Counts are only ever added to (see activity.recording), so a
total over all rows of a name is monotonic and right whichever process served the
traffic.
"""

from django.db import models

from accounts.models import Organization


class Signal(models.TextChoices):
    RECORDS_POSTS = "records_posts", "/records posts"
    KEYS_REPORTED = "keys_reported", "keys reported"
    EXPORTS_ASKED = "exports_asked", "records asked to export"
    EXPORTS_DELIVERED = "exports_delivered", "records delivered"
    EXPORTS_REFUSED = "exports_refused", "records refused"  # label: the reason
    SHARED_STEPS = "shared_steps", "shared steps"
    LAYER_UPLOADS = "layer_uploads", "layer uploads"
    LAYER_UPLOAD_BYTES = "layer_upload_bytes", "bytes uploaded"
    UPLOAD_SKIPS = "upload_skips", "uploads skipped"
    UPLOAD_SKIPPED_BYTES = "upload_skipped_bytes", "bytes not uploaded (Skip)"
    DOWNLOAD_URLS = "download_urls", "download URLs"
    SERVED_BYTES = "served_bytes", "bytes served"
    IMPORTS = "imports", "imports served"
    MOUNT_DOWNLOADS = "mount_downloads", "mount downloads"
    MOUNT_DOWNLOAD_BYTES = "mount_download_bytes", "mount bytes offered for download"
    MOUNT_UPLOADS = "mount_uploads", "mount uploads"
    MOUNT_UPLOAD_BYTES = "mount_upload_bytes", "mount bytes uploaded"
    MOUNT_SKIPS = "mount_skips", "mount uploads skipped"  # label: the skip reason
    EVICTIONS = "evictions", "evictions"  # label: user, policy or engine
    EVICTED_BYTES = "evicted_bytes", "bytes evicted"  # label: user, policy or engine
    # The engine request latency histogram: label "<endpoint> <bucket upper bound>", one
    # per request in its bucket (not cumulative); and the seconds, in microseconds.
    ENGINE_REQUESTS = "engine_requests", "engine requests by latency"
    ENGINE_REQUEST_MICROSECONDS = "engine_request_us", "engine request time (µs)"


class Period(models.TextChoices):
    HOUR = "hour"
    DAY = "day"


class Activity(models.Model):
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    # accounts.Engine's primary key, or 0 when the call could not be matched to an engine.
    # Not a foreign key: an organization's history outlives the engine rows it counts.
    engine_ref = models.PositiveBigIntegerField(default=0)
    period = models.CharField(max_length=4, choices=Period.choices, default=Period.HOUR)
    start = models.DateTimeField()
    name = models.CharField(max_length=40, choices=Signal.choices)
    label = models.CharField(max_length=60, blank=True, default="")
    value = models.BigIntegerField(default=0)

    class Meta:
        verbose_name_plural = "activity"
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "engine_ref", "period", "start", "name", "label"],
                name="activity_one_row_per_counter",
            )
        ]
        indexes = [models.Index(fields=["organization", "period", "start"], name="activity_org_period_start")]

    def __str__(self):
        return f"{self.name}{'/' + self.label if self.label else ''} {self.start:%Y-%m-%d %H:00} = {self.value}"


class StorageSample(models.Model):
    """What an organization stored at one moment (taken hourly by the worker)."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    at = models.DateTimeField()
    layer_bytes = models.BigIntegerField(default=0)
    mount_bytes = models.BigIntegerField(default=0)
    unreferenced_bytes = models.BigIntegerField(default=0)
    records = models.BigIntegerField(default=0)
    results = models.BigIntegerField(default=0)

    class Meta:
        indexes = [models.Index(fields=["organization", "at"], name="storage_sample_org_at")]
