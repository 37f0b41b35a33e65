from django.contrib import admin, messages
from django.db import transaction

from mounts import services
from mounts.models import CacheMount, MountPolicy, MountSnapshot, MountSwitch
from audit.admin import AuditedAdmin
from audit.models import Action


@admin.register(MountPolicy)
class MountPolicyAdmin(AuditedAdmin):
    list_display = ["organization", "mode", "size_limit"]
    list_select_related = ["organization"]
    search_fields = ["organization__slug"]


class SnapshotInline(admin.TabularInline):
    model = MountSnapshot
    extra = 0
    can_delete = False
    show_change_link = True
    fields = ["digest", "size", "state", "verified_at", "released_at", "contents_state", "file_count"]
    readonly_fields = fields
    ordering = ["-created_at"]

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(CacheMount)
class CacheMountAdmin(AuditedAdmin):
    list_display = ["name", "organization", "switch", "size_limit", "last_seen", "last_synced_at", "last_skip_reason"]
    list_filter = ["organization", "switch", "last_skip_reason"]
    list_select_related = ["organization"]
    search_fields = ["name", "organization__slug"]
    readonly_fields = ["first_seen", "last_seen", "last_synced_at", "last_skip_reason"]
    inlines = [SnapshotInline]
    actions = ["switch_on", "switch_off", "follow_policy"]

    def get_readonly_fields(self, request, obj=None):
        # The name is what engines report; renaming a row would detach it from them.
        if obj is not None:
            return ["organization", "name", *self.readonly_fields]
        return self.readonly_fields

    def _switch(self, request, queryset, switch):
        # A bulk update skips log_change: each mount that changes is audited here instead.
        for mount in queryset.select_related("organization").exclude(switch=switch):
            mount.switch = switch
            mount.save(update_fields=["switch"])
            self._audit(request, mount, Action.ADMIN_CHANGED, f"Changed switch to {switch}.")

    @admin.action(description="Always sync the selected mounts")
    def switch_on(self, request, queryset):
        self._switch(request, queryset, MountSwitch.ON)

    @admin.action(description="Never sync the selected mounts")
    def switch_off(self, request, queryset):
        self._switch(request, queryset, MountSwitch.OFF)

    @admin.action(description="Let the selected mounts follow the organization's policy")
    def follow_policy(self, request, queryset):
        self._switch(request, queryset, MountSwitch.POLICY)


@admin.register(MountSnapshot)
class MountSnapshotAdmin(AuditedAdmin):
    list_display = ["mount", "digest", "size", "state", "created_at", "verified_at", "released_at", "contents_state"]
    list_filter = ["state", "contents_state", ("released_at", admin.EmptyFieldListFilter), "mount__organization"]
    list_select_related = ["mount__organization"]
    search_fields = ["digest", "mount__name"]
    readonly_fields = [
        "mount", "digest", "size", "media_type", "state", "created_at", "expires_at", "verified_at",
        "failed_at", "error", "token", "engine", "remote_addr", "user_agent", "contents_state", "contents",
        "file_count", "uncompressed_bytes", "indexed_at",
    ]
    actions = ["reindex"]

    def has_add_permission(self, request):
        return False

    @admin.action(description="Index the contents again")
    def reindex(self, request, queryset):
        ids = list(queryset.filter(state="verified").values_list("pk", flat=True))
        with transaction.atomic():
            for pk in ids:
                services.queue_index(pk, force=True)
        messages.info(request, f"{len(ids)} snapshot(s) queued for indexing")
