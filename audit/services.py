"""Writing the audit log: the one function every audited action calls.

    record(organization, actor, action, target="", bytes_freed=0, evicted=0, details=None)
    as_actor(user | "policy" | "engine" | "command" | Actor) -> Actor
    command(name) -> Actor          a management command run from a shell
    prune(now=None) -> int          entries older than CACHEWEB_AUDIT_DAYS go

The services that evict or issue tokens take an `actor` and call record themselves, so
a dashboard view, an API view, Django admin and a command are each audited once, by the
same code.
"""

from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from activity import recording
from activity.models import Signal
from audit.models import ActorKind, AuditEntry

# Names of deleted items kept in an entry's details: enough to answer "was it this one",
# small enough that a pass over a large organization writes a small row.
NAMES_KEPT = 100


@dataclass(frozen=True)
class Actor:
    kind: str
    user: object = None
    name: str = ""

    @property
    def eviction_reason(self):
        """The `reason` label of the eviction counters: an operator's command is a user's."""
        return {ActorKind.POLICY: "policy", ActorKind.ENGINE: "engine"}.get(self.kind, "user")


POLICY = Actor(ActorKind.POLICY)
ENGINE = Actor(ActorKind.ENGINE)


def command(name):
    return Actor(ActorKind.COMMAND, name=name)


def as_actor(actor):
    if isinstance(actor, Actor):
        return actor
    if isinstance(actor, str):
        return Actor(ActorKind(actor))
    if getattr(actor, "is_authenticated", False):
        return Actor(ActorKind.USER, user=actor, name=actor.get_username())
    raise TypeError(f"not an actor: {actor!r}")


def record(organization, actor, action, target="", bytes_freed=0, evicted=0, details=None):
    """Write one entry. `evicted`: how many blobs the action deleted (every eviction
    counts in blobs, whatever it evicted: one unit for the counter);
    with it the activity counters evictions and evicted_bytes (label: user, policy or
    engine) are added to as well, which /metrics reports."""
    actor = as_actor(actor)
    entry = AuditEntry.objects.create(
        organization=organization,
        actor_kind=actor.kind,
        user=actor.user,
        actor_name=actor.name[:150],
        action=action,
        target=target[:500],
        bytes_freed=bytes_freed or 0,
        details=details or {},
    )
    if organization is not None and (evicted or bytes_freed):
        reason = actor.eviction_reason
        recording.record(
            organization.pk,
            {(Signal.EVICTIONS, reason): evicted, (Signal.EVICTED_BYTES, reason): bytes_freed or 0},
        )
    return entry


def names(items):
    """At most NAMES_KEPT of `items`, as a list for an entry's details."""
    return [str(item) for item in list(items)[:NAMES_KEPT]]


def prune(now=None):
    cutoff = (now or timezone.now()) - timedelta(days=settings.AUDIT_DAYS)
    deleted, _ = AuditEntry.objects.filter(at__lt=cutoff).delete()
    return deleted


def record_form_changes(organization, actor, action, form, target="", subject=""):
    """Audit what a bound, saved ModelForm changed: {field: {"from", "to"}}; nothing when
    nothing changed."""
    changed = {
        name: {"from": _plain(form.initial.get(name)), "to": _plain(form.cleaned_data.get(name))}
        for name in form.changed_data
    }
    # changed_data also names fields the form cannot compare exactly (ours: the periods).
    changed = {name: c for name, c in changed.items() if c["from"] != c["to"]}
    if not changed:
        return None
    words = ", ".join(f"{name} {c['from']!r} → {c['to']!r}" for name, c in changed.items())
    if subject:
        words = f"{subject}: {words}"
    return record(organization, actor, action, target=target or words, details={"changed": changed})


def _plain(value):
    if isinstance(value, str):
        return str(value)  # a choice (TextChoices member) as its plain value
    return value if value is None or isinstance(value, (bool, int, float)) else str(value)
