"""Personal API tokens: an operator's credential for /api/v1/, never for engines.

Like engine tokens (accounts.models.EngineToken), only a lookup prefix and a SHA-256 hash
are stored; the value is shown once. The prefix `cwu_` keeps them apart from engine
tokens (`cwt_`): each authentication looks up its own kind only.
"""

from datetime import timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone

from accounts.models import HashedToken

TOKEN_PREFIX = "cwu_"


class ApiTokenQuerySet(models.QuerySet):
    def matching(self, token):
        """The token (active or not) whose value is `token`, or None."""
        return ApiToken.match_value(self.select_related("user"), token)


class ApiToken(HashedToken):
    value_prefix = TOKEN_PREFIX

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    read_only = models.BooleanField(default=False, help_text="may read, never change anything")
    expires_at = models.DateTimeField(null=True, blank=True)

    objects = ApiTokenQuerySet.as_manager()
    audit_revoked = "api_token_revoked"

    def audit_details(self):
        # A command may create a token for someone else: the entry names whose it is.
        return {"owner": self.user.get_username()}

    class Meta(HashedToken.Meta):
        pass

    def __str__(self):
        return f"{self.prefix}… ({self.user})"

    def expired(self, now=None):
        return self.expires_at is not None and self.expires_at <= (now or timezone.now())

    @classmethod
    def issue(cls, user, read_only=False, label="", expires_days=None, actor=None):
        """Create a token; returns (row, value). The value is not kept anywhere. With
        `actor` (a user, or audit.services.Actor) audited."""
        value, stored = cls.new_value()
        now = timezone.now()
        row = cls.objects.create(
            user=user,
            read_only=read_only,
            label=label,
            created_at=now,
            expires_at=now + timedelta(days=expires_days) if expires_days else None,
            **stored,
        )
        if actor is not None:
            row.audit(actor, "api_token_created")
        return row, value
