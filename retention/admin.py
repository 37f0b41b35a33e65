from django.contrib import admin

from audit.admin import AuditedAdmin, RecordOfWhatHappenedAdmin
from retention.models import LifecyclePass, StoragePolicy
from retention.services import set_storage_policy


@admin.register(StoragePolicy)
class StoragePolicyAdmin(AuditedAdmin):
    """Saves go through set_storage_policy, which audits the change (storage policy
    changed, with what changed) and sets updated_by; deletions are audited as admin's."""

    list_display = ["organization", "storage_limit", "unused_after_days", "updated_at", "updated_by"]
    readonly_fields = ["updated_at", "updated_by"]
    audit_additions = False
    audit_changes = False

    def get_readonly_fields(self, request, obj=None):
        # The organization is the row's primary key: another one is another policy.
        return [*self.readonly_fields, "organization"] if obj is not None else self.readonly_fields

    def save_model(self, request, obj, form, change):
        policy = set_storage_policy(
            obj.organization,
            request.user,
            storage_limit=form.cleaned_data["storage_limit"],
            unused_after_days=form.cleaned_data["unused_after_days"],
        )
        obj.pk = policy.pk
        obj.updated_at = policy.updated_at
        obj.updated_by = policy.updated_by


@admin.register(LifecyclePass)
class LifecyclePassAdmin(RecordOfWhatHappenedAdmin):
    list_display = ["started_at", "organization", "dry_run", "run_by", "freed_bytes", "kept", "error"]
    list_filter = ["organization", "dry_run"]
    date_hierarchy = "started_at"
