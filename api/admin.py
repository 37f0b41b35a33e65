from django.contrib import admin

from api.models import ApiToken
from audit.admin import AuditedAdmin


@admin.register(ApiToken)
class ApiTokenAdmin(AuditedAdmin):
    list_display = ["prefix", "user", "label", "read_only", "created_at", "expires_at", "last_used_at", "revoked_at"]
    list_filter = ["read_only"]
    search_fields = ["lookup", "label", "user__username"]
    readonly_fields = ["user", "lookup", "created_at", "last_used_at"]
    fields = ["user", "lookup", "label", "read_only", "created_at", "expires_at", "last_used_at", "revoked_at"]

    def has_add_permission(self, request):
        return False  # values are shown once: create them on /profile/tokens/ or with createapitoken
