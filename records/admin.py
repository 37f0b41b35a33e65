"""Admin pages for the cache graph. Engines create these rows: admin shows them and lets a
superuser evict, never add or rewrite what an engine said. Deleting a result goes through
the same eviction service as the dashboard, so its unshared layers' bytes go too."""

from django.contrib import admin
from django.template.defaultfilters import filesizeformat
from django.utils.html import format_html, format_html_join

from audit.admin import AuditedAdmin
from records import eviction
from records.models import ImportSnapshot, Layer, LayerContents, PendingExport, Record, RecordInput, Result, ResultLayer


class EngineRowsAdmin(AuditedAdmin):
    """Rows only engines create: no Add button, every field read-only."""

    def has_add_permission(self, request, obj=None):
        return False

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields] + list(self.extra_readonly)

    extra_readonly = ()


def human_size(value):
    return "-" if value is None else f"{filesizeformat(value)} ({value:,} bytes)"


class RecordInputInline(admin.TabularInline):
    model = RecordInput
    fk_name = "record"
    fields = ["index", "selector", "source"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    verbose_name = "input"
    verbose_name_plural = "inputs (alternatives per input index)"

    def has_add_permission(self, request, obj=None):
        # Inputs are part of the record's identity: changing them would make it lie.
        return False


class ResultInline(admin.TabularInline):
    model = Result
    fields = ["description", "complete", "chain_size_human", "created_at", "exported_at", "engine", "cache_ref_id"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False

    @admin.display(description="chain size")
    def chain_size_human(self, obj):
        return filesizeformat(obj.chain_size)


@admin.register(Record)
class RecordAdmin(EngineRowsAdmin):
    list_display = ["short_identity", "description", "digest", "input_count", "has_result", "organization", "created_at"]
    list_filter = ["organization", "has_result"]
    search_fields = ["identity", "digest", "description", "results__description"]
    extra_readonly = ["layer_chain"]
    inlines = [RecordInputInline, ResultInline]
    list_select_related = ["organization"]
    show_full_result_count = False

    def has_delete_permission(self, request, obj=None):
        # A record is part of other records' identities; evict its step instead (its
        # results), from the dashboard or from the result's admin page.
        return False

    @admin.display(description="identity")
    def short_identity(self, obj):
        return obj.identity[:19] + "…"

    @admin.display(description="layer chain of the newest complete result (base first)")
    def layer_chain(self, obj):
        result = obj.results.filter(complete=True).order_by("-exported_at", "-id").first()
        if result is None:
            return "-"
        rows = result.chain_layers.select_related("layer").order_by("position")
        return format_html(
            "<ol>{}</ol>",
            format_html_join(
                "", "<li><code>{}</code> {} ({})</li>",
                ((r.layer.digest, r.layer.media_type, filesizeformat(r.layer.size)) for r in rows),
            ),
        )

    def get_search_results(self, request, queryset, search_term):
        queryset, duplicates = super().get_search_results(request, queryset, search_term)
        return queryset.distinct(), duplicates


class ResultLayerInline(admin.TabularInline):
    model = ResultLayer
    fields = ["position", "layer", "media_type", "size"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    verbose_name_plural = "layer chain (base first)"

    def has_add_permission(self, request, obj=None):
        return False

    @admin.display(description="media type")
    def media_type(self, obj):
        return obj.layer.media_type

    @admin.display(description="size")
    def size(self, obj):
        return filesizeformat(obj.layer.size)


@admin.register(Result)
class ResultAdmin(EngineRowsAdmin):
    audit_deletions = False  # eviction.evict_results audits it
    list_display = ["__str__", "record", "complete", "chain_size_human", "created_at", "exported_at", "engine", "organization"]
    list_filter = ["record__organization", "complete"]
    search_fields = ["description", "record__identity", "record__digest", "chain_layers__layer__digest"]
    extra_readonly = ["size_human", "chain_size_human"]
    inlines = [ResultLayerInline]
    list_select_related = ["record", "record__organization", "engine"]
    show_full_result_count = False

    @admin.display(description="organization")
    def organization(self, obj):
        return obj.record.organization

    @admin.display(description="own layer")
    def size_human(self, obj):
        return human_size(obj.size)

    @admin.display(description="chain size", ordering="chain_size")
    def chain_size_human(self, obj):
        return filesizeformat(obj.chain_size)

    def delete_model(self, request, obj):
        eviction.evict_results(obj.record.organization, [obj.pk], actor=request.user)

    def delete_queryset(self, request, queryset):
        by_org = {}
        for result in queryset.select_related("record__organization"):
            by_org.setdefault(result.record.organization, []).append(result.pk)
        for organization, ids in by_org.items():
            eviction.evict_results(organization, ids, actor=request.user)

    def get_search_results(self, request, queryset, search_term):
        queryset, duplicates = super().get_search_results(request, queryset, search_term)
        return queryset.distinct(), duplicates


@admin.register(Layer)
class LayerAdmin(EngineRowsAdmin):
    list_display = ["digest", "media_type", "size_human", "organization", "created_at", "last_used_at"]
    list_filter = ["organization", "media_type"]
    search_fields = ["digest", "diff_id"]
    extra_readonly = ["size_human"]
    show_full_result_count = False

    def has_delete_permission(self, request, obj=None):
        # Evict the steps using it, or its blob: deleting the row alone left the bytes.
        return False

    @admin.display(description="size", ordering="size")
    def size_human(self, obj):
        return human_size(obj.size)


@admin.register(LayerContents)
class LayerContentsAdmin(EngineRowsAdmin):
    list_display = ["layer", "state", "file_count", "indexed_at"]
    list_filter = ["state"]
    exclude = ["listing"]

    def get_readonly_fields(self, request, obj=None):
        return [f for f in super().get_readonly_fields(request, obj) if f != "listing"]


@admin.register(PendingExport)
class PendingExportAdmin(EngineRowsAdmin):
    list_display = ["record", "cache_ref_id", "description", "asked_at"]
    list_filter = ["record__organization"]
    search_fields = ["description", "record__identity", "cache_ref_id"]


@admin.register(ImportSnapshot)
class ImportSnapshotAdmin(AuditedAdmin):
    list_display = ["organization", "generation", "built_generation", "record_count", "layer_count", "size_human", "built_at", "build_ms"]
    readonly_fields = ["organization", "built_generation", "etag", "size_human", "record_count", "layer_count", "built_at", "build_ms", "building_since"]
    # Bumping the generation by hand forces a rebuild; nothing else here is to edit.
    fields = ["generation"] + readonly_fields

    def has_add_permission(self, request, obj=None):
        return False

    @admin.display(description="size")
    def size_human(self, obj):
        return human_size(obj.size)
