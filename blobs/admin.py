"""Blobs in admin: engines create them, so no Add and nothing to edit; deleting one goes
through blobs.services.delete_blob, as dashboard eviction does, so its bytes go too."""

from django.contrib import admin, messages
from django.template.defaultfilters import filesizeformat

from blobs.models import Blob
from blobs.services import delete_blob
from blobs.storage import StoreUnavailable
from audit.admin import AuditedAdmin


@admin.register(Blob)
class BlobAdmin(AuditedAdmin):
    audit_deletions = False  # delete_blob audits the eviction
    list_display = ("digest", "organization", "state", "size_human", "verified_at", "last_used_at", "use_count")
    list_filter = ("state", "organization")
    search_fields = ("digest",)
    list_select_related = ("organization",)
    date_hierarchy = "created_at"

    def has_add_permission(self, request, obj=None):
        return False

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in Blob._meta.fields] + ["size_human"]

    @admin.display(description="size", ordering="size")
    def size_human(self, obj):
        return "-" if obj.size is None else f"{filesizeformat(obj.size)} ({obj.size:,} bytes)"

    def _delete(self, request, blobs):
        for blob in blobs:
            try:
                delete_blob(blob.organization, blob.digest, actor=request.user)
            except (StoreUnavailable, OSError) as exc:
                # The bytes go first: the row stays, so nothing claims bytes that are gone.
                self.message_user(request, f"{blob.digest} was kept: the blob store did not answer ({exc}).", messages.ERROR)

    def delete_model(self, request, obj):
        self._delete(request, [obj])

    def delete_queryset(self, request, queryset):
        self._delete(request, list(queryset.select_related("organization")))
