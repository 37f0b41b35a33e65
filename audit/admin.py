"""The audit log in Django admin (read only), and the mixin that audits admin edits."""

from django.contrib import admin

from accounts.models import Organization
from audit import services as audit
from audit.models import Action, AuditEntry

# How the organization of an admin-edited row is reached, tried in order.
ORGANIZATION_PATHS = ("organization", "record.organization", "mount.organization", "layer.organization",
                      "result.record.organization")


def organization_of(obj):
    if isinstance(obj, Organization):
        return obj
    for path in ORGANIZATION_PATHS:
        value = obj
        try:
            for name in path.split("."):
                value = getattr(value, name)
        except (AttributeError, Organization.DoesNotExist):
            continue
        if isinstance(value, Organization):
            return value
    return None


class AuditedAdmin(admin.ModelAdmin):
    """Audits every add, change and delete made through this ModelAdmin, with the admin
    user as the actor. Admins whose deletions (or additions, changes) go through an audited
    service set audit_deletions (audit_additions, audit_changes) = False, so that each is
    audited once."""

    audit_deletions = True
    audit_additions = True
    audit_changes = True

    def _audit(self, request, obj, action, message=""):
        label = f"{obj._meta.verbose_name} {obj}"
        organization = organization_of(obj)
        if action == Action.ADMIN_DELETED and isinstance(obj, Organization):
            # Its own entries go with it; this one stays, under no organization.
            organization = None
        details = {"model": obj._meta.label, "pk": obj.pk if obj.pk is not None else None}
        if message:
            details["message"] = str(message)
        audit.record(organization, request.user, action, target=label, details=details)

    def log_addition(self, request, obj, message):
        if self.audit_additions:
            self._audit(request, obj, Action.ADMIN_ADDED, message)
        return super().log_addition(request, obj, message)

    def log_change(self, request, obj, message):
        if self.audit_changes:
            self._audit(request, obj, Action.ADMIN_CHANGED, message)
        return super().log_change(request, obj, message)

    def log_deletions(self, request, queryset):
        if self.audit_deletions:
            for obj in queryset:
                self._audit(request, obj, Action.ADMIN_DELETED)
        return super().log_deletions(request, queryset)


class RecordOfWhatHappenedAdmin(admin.ModelAdmin):
    """Audit entries and lifecycle passes: shown, never added, changed or deleted here."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        # The record of what happened must not go without a trace: pruning after
        # CACHEWEB_AUDIT_DAYS (audit.tasks.prune) is the only way out.
        return False


@admin.register(AuditEntry)
class AuditEntryAdmin(RecordOfWhatHappenedAdmin):
    list_display = ["at", "organization", "actor", "action", "target", "bytes_freed"]
    list_filter = ["action", "actor_kind", "organization"]
    search_fields = ["target", "actor_name"]
    date_hierarchy = "at"
