from django.contrib import admin, messages

from accounts.models import Engine, EngineToken, Membership, Organization
from audit.admin import AuditedAdmin


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 1
    autocomplete_fields = ["user"]


@admin.register(Organization)
class OrganizationAdmin(AuditedAdmin):
    list_display = ["slug", "name", "import_period", "export_period", "export_timeout", "created_at"]
    search_fields = ["slug", "name"]
    inlines = [MembershipInline]


@admin.register(EngineToken)
class EngineTokenAdmin(AuditedAdmin):
    audit_additions = False  # EngineToken.issue audits the creation
    list_display = ["prefix", "organization", "label", "read_only", "last_used_at", "revoked", "created_at"]
    list_filter = ["organization", "read_only", ("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["label", "lookup", "organization__slug"]
    readonly_fields = ["prefix", "created_at", "last_used_at"]
    fields = ["organization", "label", "read_only", "prefix", "created_at", "last_used_at", "revoked_at"]
    actions = ["revoke_tokens"]

    @admin.display(boolean=True)
    def revoked(self, obj):
        return obj.revoked

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ["prefix", "created_at", "last_used_at"]
        # A token's owner and rights are fixed once it exists: issue a new one instead.
        return ["organization", "read_only", "prefix", "created_at", "last_used_at"]

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            return
        row, value = EngineToken.issue(obj.organization, read_only=obj.read_only, label=obj.label, actor=request.user)
        obj.pk, obj.lookup, obj.token_hash = row.pk, row.lookup, row.token_hash
        obj.created_at = row.created_at
        messages.warning(
            request,
            f"Engine token (shown once, copy it now): {value}",
        )

    @admin.action(description="Revoke selected tokens")
    def revoke_tokens(self, request, queryset):
        for token in queryset.active():
            token.revoke(actor=request.user)


@admin.register(Engine)
class EngineAdmin(AuditedAdmin):
    list_display = ["engine_id", "organization", "first_seen", "last_seen", "remote_addr", "user_agent"]
    list_filter = ["organization"]
    search_fields = ["engine_id", "remote_addr", "user_agent"]
    readonly_fields = ["organization", "engine_id", "first_seen", "last_seen", "remote_addr", "user_agent", "last_token"]

    def has_add_permission(self, request, obj=None):
        # Engines register themselves through /config.
        return False
