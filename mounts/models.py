"""Synced cache mounts: per organization and name, with their stored snapshots."""

import fnmatch

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from accounts.models import Engine, EngineToken, Organization

SNAPSHOT_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+zstd"


class SyncMode(models.TextChoices):
    ALL = "all", "sync every mount engines report"
    PATTERNS = "patterns", "sync only names matching the patterns"


class MountPolicy(models.Model):
    """An organization's rules for which mounts are synced and how much they may hold.

    Organizations without a row follow the defaults (sync everything, server-wide size
    limits); reading the policy never creates one."""

    organization = models.OneToOneField(
        Organization, primary_key=True, on_delete=models.CASCADE, related_name="mount_policy"
    )
    mode = models.CharField(max_length=10, choices=SyncMode.choices, default=SyncMode.ALL)
    patterns = models.TextField(
        blank=True,
        help_text="one shell-style pattern per line (go-*, pnpm-store-v?); used when the mode is 'patterns'",
    )
    size_limit = models.PositiveBigIntegerField(
        "organization size limit (bytes)",
        null=True,
        blank=True,
        help_text="cap on the total of all mounts' current snapshots; empty: the server default; 0: none",
    )

    class Meta:
        verbose_name_plural = "mount policies"

    def __str__(self):
        return f"mount policy of {self.organization.slug}"

    @classmethod
    def for_organization(cls, organization):
        policy = cls.objects.filter(organization=organization).first()
        return policy or cls(organization=organization)

    def pattern_list(self):
        return [line.strip() for line in self.patterns.splitlines() if line.strip()]

    def allows(self, name):
        if self.mode == SyncMode.ALL:
            return True
        # fnmatchcase: a pattern means the same on every platform.
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.pattern_list())

    def effective_size_limit(self):
        """Bytes, or 0 for no limit."""
        return settings.MOUNT_ORG_SIZE_LIMIT if self.size_limit is None else self.size_limit


class MountSwitch(models.TextChoices):
    POLICY = "policy", "follow the organization's policy"
    ON = "on", "always sync"
    OFF = "off", "never sync"


class SkipReason(models.TextChoices):
    """Why the last upload an engine offered was not taken ('' when it was)."""

    NONE = "", "accepted"
    UNCHANGED = "unchanged", "the current snapshot already has this digest"
    NOT_SYNCED = "not-synced", "not synced under the organization's policy"
    SWITCHED_OFF = "off", "turned off for this mount"
    MOUNT_LIMIT = "mount-limit", "above the mount's size limit"
    ORG_LIMIT = "org-limit", "above the organization's size limit"
    READ_ONLY = "read-only", "offered with a read-only token"


class CacheMount(models.Model):
    """A cache mount name an engine reported for this organization. The name is data
    chosen by users; it is never used as a path."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="cache_mounts")
    # Text, not a bounded CharField: the limit is in bytes (MOUNT_NAME_MAX_BYTES) and
    # checked where engines offer names.
    name = models.TextField()
    switch = models.CharField(max_length=10, choices=MountSwitch.choices, default=MountSwitch.POLICY)
    size_limit = models.PositiveBigIntegerField(
        "size limit (bytes)",
        null=True,
        blank=True,
        help_text="largest snapshot accepted; empty: the server default; 0: none",
    )
    first_seen = models.DateTimeField(default=timezone.now)
    last_seen = models.DateTimeField(default=timezone.now)
    last_synced_at = models.DateTimeField(
        null=True, blank=True, help_text="when an engine last left this mount in sync with the service"
    )
    last_skip_reason = models.CharField(max_length=20, choices=SkipReason.choices, blank=True)

    class Meta:
        ordering = ["organization", "name"]
        constraints = [
            models.UniqueConstraint(fields=["organization", "name"], name="mount_unique_per_org"),
        ]

    def __str__(self):
        return f"{self.name} ({self.organization.slug})"

    def is_synced(self, policy):
        if self.switch == MountSwitch.ON:
            return True
        if self.switch == MountSwitch.OFF:
            return False
        return policy.allows(self.name)

    def effective_size_limit(self):
        """Bytes, or 0 for no limit."""
        return settings.MOUNT_SIZE_LIMIT if self.size_limit is None else self.size_limit

    def current_snapshot(self):
        return self.snapshots.current().first()


class SnapshotState(models.TextChoices):
    PENDING = "pending", "pending"
    VERIFIED = "verified", "verified"
    FAILED = "failed", "failed"


class ContentsState(models.TextChoices):
    NOT_INDEXED = "", "not indexed"
    COMPLETE = "complete", "complete"
    TRUNCATED = "truncated", "partial (an index bound was reached)"
    INVALID = "invalid", "not a valid tar"


class SnapshotQuerySet(models.QuerySet):
    def live(self):
        """Verified and not released: what a mount can be restored from."""
        return self.filter(state=SnapshotState.VERIFIED, released_at__isnull=True)

    def current(self):
        return self.live().order_by("-verified_at", "-pk")


class MountSnapshot(models.Model):
    """One upload of a mount: a blob of the organization, by digest.

    Pending from the moment an upload URL is handed out, verified once the blob is
    (the newest verified one is what engines download), failed if the URL expired
    first. Releasing a snapshot gives its blob up for garbage collection; the blob
    itself is only deleted by whoever collects it, and only if nothing else holds it."""

    mount = models.ForeignKey(CacheMount, on_delete=models.CASCADE, related_name="snapshots")
    digest = models.CharField(max_length=71)
    size = models.PositiveBigIntegerField()
    media_type = models.CharField(max_length=255, default=SNAPSHOT_MEDIA_TYPE)
    state = models.CharField(max_length=10, choices=SnapshotState.choices, default=SnapshotState.PENDING)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True, help_text="when the upload URL expires")
    verified_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)
    released_at = models.DateTimeField(null=True, blank=True)
    error = models.CharField(max_length=500, blank=True)
    token = models.ForeignKey(
        EngineToken, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        help_text="the token the engine uploaded with",
    )
    engine = models.ForeignKey(
        Engine, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        help_text="the engine that last called /config with this token from this address, "
        "when exactly one did (the upload request itself names no engine)",
    )
    remote_addr = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=500, blank=True)

    contents_state = models.CharField(max_length=10, choices=ContentsState.choices, blank=True)
    contents = models.JSONField(null=True, blank=True, help_text="summary from the contents index")
    file_count = models.PositiveBigIntegerField(null=True, blank=True)
    uncompressed_bytes = models.PositiveBigIntegerField(null=True, blank=True)
    indexed_at = models.DateTimeField(null=True, blank=True)

    objects = SnapshotQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["mount", "state", "verified_at"]),
            # Which snapshots name a blob: eviction, garbage collection, the dashboard.
            models.Index(fields=["digest"], name="snapshot_digest"),
        ]
        constraints = [
            # One upload in flight per mount and digest: engines retrying share it.
            models.UniqueConstraint(
                fields=["mount", "digest"],
                condition=Q(state="pending"),
                name="one_pending_snapshot_per_mount_digest",
            ),
        ]

    def __str__(self):
        return f"{self.mount.name} @ {self.digest[:19]} ({self.state})"

    @property
    def organization(self):
        return self.mount.organization
