from django.contrib import admin

from audit.admin import AuditedAdmin
from retention.models import LifecyclePass, StoragePolicy


@admin.register(StoragePolicy)
class StoragePolicyAdmin(AuditedAdmin):
    list_display = ["organization", "storage_limit", "unused_after_days", "updated_at", "updated_by"]
    readonly_fields = ["updated_at", "updated_by"]


@admin.register(LifecyclePass)
class LifecyclePassAdmin(admin.ModelAdmin):
    list_display = ["started_at", "organization", "dry_run", "run_by", "freed_bytes", "kept", "error"]
    list_filter = ["organization", "dry_run"]
    date_hierarchy = "started_at"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
