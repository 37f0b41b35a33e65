from django.contrib import admin

from blobs.models import Blob


@admin.register(Blob)
class BlobAdmin(admin.ModelAdmin):
    list_display = ("digest", "organization", "state", "size", "verified_at", "last_used_at", "use_count")
    list_filter = ("state", "organization")
    search_fields = ("digest",)
    list_select_related = ("organization",)
    readonly_fields = ("created_at",)
    date_hierarchy = "created_at"
