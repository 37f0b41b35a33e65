from django.db import models
from django.utils import timezone

from accounts.models import Organization


class BlobState(models.TextChoices):
    PENDING = "pending", "pending"
    VERIFIED = "verified", "verified"


class Blob(models.Model):
    """Bytes stored once per organization, addressed by digest, verified on the way in."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="blobs")
    digest = models.CharField(max_length=71)
    size = models.BigIntegerField(null=True, blank=True)
    state = models.CharField(max_length=10, choices=BlobState.choices, default=BlobState.PENDING)
    created_at = models.DateTimeField(default=timezone.now)
    verified_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    use_count = models.PositiveBigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["organization", "digest"], name="blob_unique_per_org")
        ]
        indexes = [models.Index(fields=["organization", "state"])]

    def __str__(self):
        return f"{self.digest} ({self.organization.slug})"


class StoreIdentity(models.Model):
    """Which built-in blob directory this database's blobs were written to: one row, whose
    store_id is also written in that directory (blobs.identity). Web processes scaled out
    must share the directory; one started on another directory refuses to start rather
    than take the blobs it cannot see for lost."""

    store_id = models.CharField(max_length=64)
    location = models.CharField(max_length=1000, help_text="the blob directory of the process that recorded it")
    recorded_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name_plural = "store identity"

    def __str__(self):
        return f"blob store {self.store_id} ({self.location})"
