"""The audit log: who evicted what, who created or revoked a token, who changed a setting.

Rows are written only by audit.services.record, and read by the audit page and the API.
"""

from django.conf import settings
from django.db import models
from django.utils import timezone

from accounts.models import Organization


class ActorKind(models.TextChoices):
    USER = "user", "user"
    POLICY = "policy", "storage policy"
    ENGINE = "engine", "engine"
    COMMAND = "command", "management command"


class Action(models.TextChoices):
    BLOB_EVICTED = "blob_evicted", "blob evicted"
    STEPS_EVICTED = "steps_evicted", "build steps evicted"
    MOUNT_EVICTED = "mount_evicted", "mount evicted"
    LIFECYCLE_DELETED = "lifecycle_deleted", "storage lifecycle deleted"
    TOKEN_CREATED = "token_created", "engine token created"
    TOKEN_REVOKED = "token_revoked", "engine token revoked"
    API_TOKEN_CREATED = "api_token_created", "API token created"
    API_TOKEN_REVOKED = "api_token_revoked", "API token revoked"
    SETTINGS_CHANGED = "settings_changed", "settings changed"
    STORAGE_POLICY_CHANGED = "storage_policy_changed", "storage policy changed"
    ADMIN_ADDED = "admin_added", "added in admin"
    ADMIN_CHANGED = "admin_changed", "changed in admin"
    ADMIN_DELETED = "admin_deleted", "deleted in admin"


EVICTIONS = (Action.BLOB_EVICTED, Action.STEPS_EVICTED, Action.MOUNT_EVICTED, Action.LIFECYCLE_DELETED)


class AuditEntry(models.Model):
    # Null for what belongs to no organization: a user's personal API tokens.
    organization = models.ForeignKey(
        Organization, null=True, blank=True, on_delete=models.CASCADE, related_name="audit_entries"
    )
    at = models.DateTimeField(default=timezone.now, db_index=True)
    actor_kind = models.CharField(max_length=10, choices=ActorKind.choices)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # The user name as it was: the entry keeps saying who after the user is deleted.
    actor_name = models.CharField(max_length=150, blank=True)
    action = models.CharField(max_length=30, choices=Action.choices)
    target = models.CharField(max_length=500, blank=True)
    bytes_freed = models.BigIntegerField(default=0)
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-at", "-pk"]
        indexes = [models.Index(fields=["organization", "-at"], name="audit_org_at")]
        verbose_name_plural = "audit entries"

    def __str__(self):
        return f"{self.at:%Y-%m-%d %H:%M} {self.actor} {self.get_action_display()} {self.target}"

    @property
    def actor(self):
        if self.actor_kind == ActorKind.USER:
            return self.actor_name or "deleted user"
        if self.actor_name:
            return f"{self.get_actor_kind_display()} ({self.actor_name})"
        return self.get_actor_kind_display()
