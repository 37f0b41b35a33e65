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
