import hashlib
import re
import hmac
import secrets
from datetime import timedelta

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import connection, models
from django.utils import timezone

TOKEN_PREFIX = "cwt_"
LOOKUP_LENGTH = 8
LAST_USED_EVERY = timedelta(minutes=1)
NS_PER_SECOND = 1_000_000_000
# Engines read the periods as Go time.Durations (int64 nanoseconds, about 292 years);
# a month is far beyond any useful period and far inside that range.
MAX_PERIOD = 30 * 24 * 3600
PERIOD_VALIDATORS = [MinValueValidator(1), MaxValueValidator(MAX_PERIOD)]

slug_validator = RegexValidator(r"^[a-z0-9][a-z0-9-]{0,62}$", "lower-case letters, digits and dashes")


def _default_import_period():
    return settings.DEFAULT_IMPORT_PERIOD


def _default_export_period():
    return settings.DEFAULT_EXPORT_PERIOD


def _default_export_timeout():
    return settings.DEFAULT_EXPORT_TIMEOUT


class Organization(models.Model):
    """A tenant: its engines share one cache; nothing crosses between organizations."""

    slug = models.SlugField(max_length=63, unique=True, validators=[slug_validator])
    name = models.CharField(max_length=200, blank=True)
    import_period = models.PositiveIntegerField(
        "import period (s)", default=_default_import_period, validators=PERIOD_VALIDATORS
    )
    export_period = models.PositiveIntegerField(
        "export period (s)", default=_default_export_period, validators=PERIOD_VALIDATORS
    )
    export_timeout = models.PositiveIntegerField(
        "export timeout (s)", default=_default_export_timeout, validators=PERIOD_VALIDATORS
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["slug"]

    def __str__(self):
        return self.slug

    def engine_config(self):
        """The /config answer: durations in nanoseconds, never zero."""
        return {
            "ImportPeriod": _clamp(self.import_period) * NS_PER_SECOND,
            "ExportPeriod": _clamp(self.export_period) * NS_PER_SECOND,
            "ExportTimeout": _clamp(self.export_timeout) * NS_PER_SECOND,
        }

    @classmethod
    def ensure(cls, slug):
        org, _ = cls.objects.get_or_create(slug=slug, defaults={"name": slug})
        return org


def _clamp(seconds):
    """Rows edited past the validators (shell, SQL) still give engines a usable period."""
    return min(max(seconds, 1), MAX_PERIOD)


def hash_token(token):
    return hashlib.sha256(token.encode()).hexdigest()


class HashedToken(models.Model):
    """A credential of which only a lookup prefix and a SHA-256 hash are stored; the value
    is shown once. Subclasses set `value_prefix` (which kind of token a value is)."""

    value_prefix = ""

    label = models.CharField(max_length=200, blank=True)
    lookup = models.CharField(max_length=LOOKUP_LENGTH, db_index=True, editable=False)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True
        ordering = ["-created_at"]

    @property
    def prefix(self):
        return f"{self.value_prefix}{self.lookup}"

    @property
    def revoked(self):
        return self.revoked_at is not None

    @classmethod
    def new_value(cls):
        """(a fresh token value, the fields that store it: lookup and token_hash)."""
        value = cls.value_prefix + secrets.token_urlsafe(32).replace("-", "x").replace("_", "y")
        lookup = value[len(cls.value_prefix) : len(cls.value_prefix) + LOOKUP_LENGTH]
        return value, {"lookup": lookup, "token_hash": hash_token(value)}

    @classmethod
    def match_value(cls, queryset, token):
        """The token of `queryset` whose value is `token`, or None. Constant-time compare;
        a value not shaped like this kind of token never reaches the database (whose text
        columns refuse some characters)."""
        if not isinstance(token, str) or not re.fullmatch(
            rf"{re.escape(cls.value_prefix)}[A-Za-z0-9]{{{LOOKUP_LENGTH},200}}", token
        ):
            return None
        lookup = token[len(cls.value_prefix) : len(cls.value_prefix) + LOOKUP_LENGTH]
        wanted = hash_token(token)
        for candidate in queryset.filter(lookup=lookup):
            if hmac.compare_digest(candidate.token_hash, wanted):
                return candidate
        return None

    def audit_details(self):
        return {}

    # The organization an audit entry about this token belongs to (None: the user's own).
    audit_organization = None
    audit_revoked = ""

    def revoke(self, actor=None):
        """Revoke the token; with `actor` (a user, or audit.services.Actor) audited."""
        if self.revoked_at is None:
            self.revoked_at = timezone.now()
            self.save(update_fields=["revoked_at"])
            if actor is not None:
                self.audit(actor, self.audit_revoked)

    def audit(self, actor, action):
        # Imported here: audit's models depend on this module's Organization.
        from audit import services as audit

        audit.record(
            self.audit_organization, actor, action, target=f"{self.prefix}… {self.label}".strip(),
            details={"token": self.pk, "read_only": getattr(self, "read_only", False), **self.audit_details()},
        )

    def touch(self, now=None):
        """Record use, writing at most once a minute."""
        now = now or timezone.now()
        if self.last_used_at is None or now - self.last_used_at >= LAST_USED_EVERY:
            type(self).objects.filter(pk=self.pk).update(last_used_at=now)
            self.last_used_at = now


class EngineTokenQuerySet(models.QuerySet):
    def active(self):
        return self.filter(revoked_at__isnull=True)

    def find(self, token):
        """The active token whose value is `token`, or None."""
        return EngineToken.match_value(self.active().select_related("organization"), token)


class EngineToken(HashedToken):
    """A credential for engines. Only its hash is stored; the value is shown once."""

    value_prefix = TOKEN_PREFIX

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="tokens")
    read_only = models.BooleanField(
        default=False, help_text="may import and download, never export or upload"
    )

    objects = EngineTokenQuerySet.as_manager()

    class Meta(HashedToken.Meta):
        pass

    def __str__(self):
        return f"{self.prefix}… ({self.organization.slug})"

    audit_revoked = "token_revoked"

    @property
    def audit_organization(self):
        return self.organization

    @classmethod
    def issue(cls, organization, read_only=False, label="", actor=None):
        """Create a token; returns (row, value). The value is not kept anywhere. With
        `actor` (a user, or audit.services.Actor) audited."""
        value, stored = cls.new_value()
        row = cls.objects.create(organization=organization, read_only=read_only, label=label, **stored)
        if actor is not None:
            row.audit(actor, "token_created")
        return row, value


class Engine(models.Model):
    """A Dagger engine seen through /config: one row per organization and engine id."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="engines")
    engine_id = models.CharField(max_length=255)
    first_seen = models.DateTimeField(default=timezone.now)
    last_seen = models.DateTimeField(default=timezone.now)
    remote_addr = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=500, blank=True)
    last_token = models.ForeignKey(
        EngineToken, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-last_seen"]
        constraints = [
            models.UniqueConstraint(fields=["organization", "engine_id"], name="engine_unique_per_org")
        ]

    def __str__(self):
        return f"{self.engine_id} ({self.organization.slug})"

    @classmethod
    def seen(cls, token, engine_id, remote_addr, user_agent):
        now = timezone.now()
        engine, created = cls.objects.get_or_create(
            organization=token.organization,
            engine_id=engine_id,
            defaults={
                "first_seen": now,
                "last_seen": now,
                "remote_addr": remote_addr,
                "user_agent": user_agent[:500],
                "last_token": token,
            },
        )
        if not created:
            # The same token again in the same minute: its use row is fresh enough unwritten
            # (so it is written at most once a minute, and is right to the minute).
            fresh = engine.last_token_id == token.pk and _minute(engine.last_seen) == _minute(now)
            engine.last_seen = now
            engine.remote_addr = remote_addr
            engine.user_agent = user_agent[:500]
            engine.last_token = token
            engine.save(update_fields=["last_seen", "remote_addr", "user_agent", "last_token"])
            if not fresh:
                EngineTokenUse.note(engine, token, now)
        else:
            cls.prune(token.organization_id)
            EngineTokenUse.note(engine, token, now)
        return engine

    @classmethod
    def prune(cls, organization_id):
        """Keep at most ENGINES_PER_ORG engines per organization: the longest idle go.

        Any token may call /config with any engine id, so without this a read-only CI
        token, or a client inventing ids, could grow the table without limit. Runs when a
        row is created, never on the hot path of a known engine. Rows that named a pruned
        engine (results, snapshots) keep their data, with no engine."""
        cap = settings.ENGINES_PER_ORG
        # Deleting in slices keeps one statement small even after the cap was lowered.
        while True:
            excess = list(
                cls.objects.filter(organization_id=organization_id)
                .order_by("-last_seen", "-pk")
                .values_list("pk", flat=True)[cap : cap + 500]
            )
            if not excess:
                return
            cls.objects.filter(pk__in=excess).delete()


def _minute(at):
    return int(at.timestamp()) // 60


class EngineTokenUse(models.Model):
    """An engine token an engine called /config with: first and last time (to the minute)."""

    engine = models.ForeignKey(Engine, on_delete=models.CASCADE, related_name="token_uses")
    token = models.ForeignKey(EngineToken, on_delete=models.CASCADE, related_name="engine_uses")
    first_used = models.DateTimeField()
    last_used = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["engine", "token"], name="engine_token_use_unique")]

    @classmethod
    def note(cls, engine, token, at):
        """One statement: insert the pair, or move its last_used on (never back: several
        web processes may note the same pair at once)."""
        table = cls._meta.db_table
        adapt = connection.ops.adapt_datetimefield_value
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {table} (engine_id, token_id, first_used, last_used) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (engine_id, token_id) DO UPDATE SET last_used = excluded.last_used "
                f"WHERE {table}.last_used < excluded.last_used",
                [engine.pk, token.pk, adapt(at), adapt(at)],
            )


class Role(models.TextChoices):
    VIEWER = "viewer", "viewer"
    MAINTAINER = "maintainer", "maintainer"


class Membership(models.Model):
    """An operator's place in an organization: viewers browse, maintainers also change."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.VIEWER)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["organization", "user"], name="membership_unique")
        ]

    def __str__(self):
        return f"{self.user} in {self.organization} ({self.role})"


class LoginFailure(models.Model):
    """One failed login, by user-name hash or client address (accounts.throttle)."""

    key = models.CharField(max_length=80)
    at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["key", "at"]), models.Index(fields=["at"])]
