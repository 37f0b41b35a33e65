"""Personal API tokens: an operator's credential for /api/v1/, never for engines.

Like engine tokens (accounts.models.EngineToken), only a lookup prefix and a SHA-256 hash
are stored; the value is shown once. The prefix `cwu_` keeps them apart from engine
tokens (`cwt_`): each authentication looks up its own kind only.
"""

import hmac
import re
import secrets
from datetime import timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone

from accounts.models import LAST_USED_EVERY, LOOKUP_LENGTH, hash_token

TOKEN_PREFIX = "cwu_"
TOKEN_FORMAT = re.compile(rf"{TOKEN_PREFIX}[A-Za-z0-9]{{{LOOKUP_LENGTH},200}}")


class ApiTokenQuerySet(models.QuerySet):
    def matching(self, token):
        """The token (active or not) whose value is `token`, or None. Constant-time compare."""
        if not TOKEN_FORMAT.fullmatch(token):
            return None
        lookup = token[len(TOKEN_PREFIX) : len(TOKEN_PREFIX) + LOOKUP_LENGTH]
        wanted = hash_token(token)
        for candidate in self.select_related("user").filter(lookup=lookup):
            if hmac.compare_digest(candidate.token_hash, wanted):
                return candidate
        return None


class ApiToken(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    label = models.CharField(max_length=200, blank=True)
    read_only = models.BooleanField(default=False, help_text="may read, never change anything")
    lookup = models.CharField(max_length=LOOKUP_LENGTH, db_index=True, editable=False)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.prefix}… ({self.user})"

    @property
    def prefix(self):
        return f"{TOKEN_PREFIX}{self.lookup}"

    @property
    def revoked(self):
        return self.revoked_at is not None

    def expired(self, now=None):
        return self.expires_at is not None and self.expires_at <= (now or timezone.now())

    @classmethod
    def issue(cls, user, read_only=False, label="", expires_days=None):
        """Create a token; returns (row, value). The value is not kept anywhere."""
        value = TOKEN_PREFIX + secrets.token_urlsafe(32).replace("-", "x").replace("_", "y")
        now = timezone.now()
        row = cls.objects.create(
            user=user,
            read_only=read_only,
            label=label,
            created_at=now,
            expires_at=now + timedelta(days=expires_days) if expires_days else None,
            lookup=value[len(TOKEN_PREFIX) : len(TOKEN_PREFIX) + LOOKUP_LENGTH],
            token_hash=hash_token(value),
        )
        return row, value

    def revoke(self):
        if self.revoked_at is None:
            self.revoked_at = timezone.now()
            self.save(update_fields=["revoked_at"])

    def touch(self, now=None):
        """Record use, writing at most once a minute."""
        now = now or timezone.now()
        if self.last_used_at is None or now - self.last_used_at >= LAST_USED_EVERY:
            ApiToken.objects.filter(pk=self.pk).update(last_used_at=now)
            self.last_used_at = now
