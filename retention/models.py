"""An organization's own storage policy, and the record of every storage lifecycle pass."""

from django.conf import settings
from django.db import models
from django.utils import timezone

from accounts.models import Organization


class StoragePolicy(models.Model):
    """Overrides of the eviction defaults for one organization. A field left empty (null)
    follows the environment's default (CACHEWEB_ORG_STORAGE_LIMIT,
    CACHEWEB_EVICT_UNUSED_AFTER); 0 switches that rule off for this organization.
    Reading the policy never creates a row."""

    organization = models.OneToOneField(
        Organization, primary_key=True, on_delete=models.CASCADE, related_name="storage_policy"
    )
    storage_limit = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="bytes of verified blobs; empty: the default, 0: no limit"
    )
    unused_after_days = models.PositiveIntegerField(
        null=True, blank=True, help_text="days without a download before a blob is evicted; empty: the default, 0: never"
    )
    updated_at = models.DateTimeField(default=timezone.now)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        verbose_name_plural = "storage policies"

    def __str__(self):
        return f"storage policy of {self.organization.slug}"

    @classmethod
    def for_organization(cls, organization):
        return cls.objects.filter(organization=organization).first() or cls(organization=organization)


class LifecyclePass(models.Model):
    """One storage lifecycle pass over one organization (scheduled, `manage.py gc`, or
    the API), dry or real: what it deleted, or would have."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="lifecycle_passes")
    started_at = models.DateTimeField(db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    dry_run = models.BooleanField(default=False)
    run_by = models.CharField(max_length=150, blank=True, help_text="schedule, a command, or a user name")
    counts = models.JSONField(default=dict, help_text="{kind: items}")
    bytes = models.JSONField(default=dict, help_text="{blob kind: bytes}")
    freed_bytes = models.BigIntegerField(default=0)
    kept = models.PositiveIntegerField(default=0, help_text="blobs the store failed to delete")
    error = models.TextField(blank=True)
    items = models.JSONField(default=dict, help_text="{kind: [names]}, a bounded number per kind")

    class Meta:
        ordering = ["-started_at", "-pk"]
        indexes = [models.Index(fields=["organization", "-started_at"], name="lifecycle_org_started")]
        verbose_name_plural = "lifecycle passes"

    def __str__(self):
        return f"pass over {self.organization.slug} at {self.started_at:%Y-%m-%d %H:%M}"

    @property
    def deleted(self):
        return sum(self.counts.values())
