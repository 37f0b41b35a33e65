"""Reading the audit log: one query for the dashboard page and the API.

    AuditQuery.from_params(params, organization) -> AuditQuery   (AuditQuery.Invalid: {field: message})
    entries(organization, query) -> queryset, newest first
    filter_users(organization) -> the user names the log names, for the filter
"""

from dataclasses import dataclass

from audit.models import Action, ActorKind, AuditEntry


@dataclass(frozen=True)
class AuditQuery:
    kind: str = ""  # an Action value
    actor: str = ""  # an ActorKind value
    user: str = ""  # a user name (entries whose actor is that user)

    class Invalid(ValueError):
        def __init__(self, errors):
            super().__init__("; ".join(f"{name}: {message}" for name, message in errors.items()))
            self.errors = errors

    @classmethod
    def from_params(cls, params, organization):
        kind = (params.get("kind") or "").strip()
        actor = (params.get("actor") or "").strip()
        user = (params.get("user") or "").strip()
        errors = {}
        if kind and kind not in Action.values:
            errors["kind"] = "one of " + ", ".join(Action.values)
        if actor and actor not in ActorKind.values:
            errors["actor"] = "one of " + ", ".join(ActorKind.values)
        if user and user not in filter_users(organization):
            errors["user"] = "no entry of this organization's log names that user"
        if errors:
            raise cls.Invalid(errors)
        return cls(kind, actor, user)

    def params(self):
        return {name: value for name, value in (("kind", self.kind), ("actor", self.actor), ("user", self.user)) if value}


def entries(organization, query=AuditQuery()):
    rows = AuditEntry.objects.filter(organization=organization).select_related("user")
    if query.kind:
        rows = rows.filter(action=query.kind)
    if query.actor:
        rows = rows.filter(actor_kind=query.actor)
    if query.user:
        rows = rows.filter(actor_kind=ActorKind.USER, actor_name=query.user)
    return rows.order_by("-at", "-pk")


def filter_users(organization):
    return sorted(
        AuditEntry.objects.filter(organization=organization, actor_kind=ActorKind.USER)
        .exclude(actor_name="")
        .order_by()
        .values_list("actor_name", flat=True)
        .distinct()
    )
