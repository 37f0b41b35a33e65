from django.contrib import admin
from django.utils.html import format_html, format_html_join

from records import services
from records.models import ImportSnapshot, Layer, PendingExport, Record, RecordInput, Result, ResultLayer


class GraphChangeAdmin(admin.ModelAdmin):
    """Edits made by hand change what /import must say: mark the organization changed."""

    def organization_of(self, obj):
        return obj.organization

    def changed(self, objs):
        organizations = {self.organization_of(obj) for obj in objs}
        for organization in organizations:
            services.mark_changed(organization)

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        self.changed([obj])

    def delete_model(self, request, obj):
        organization = self.organization_of(obj)
        super().delete_model(request, obj)
        services.mark_changed(organization)

    def delete_queryset(self, request, queryset):
        organizations = {self.organization_of(obj) for obj in queryset}
        super().delete_queryset(request, queryset)
        for organization in organizations:
            services.mark_changed(organization)


class RecordInputInline(admin.TabularInline):
    model = RecordInput
    fk_name = "record"
    fields = ["index", "selector", "source"]
    readonly_fields = fields
    raw_id_fields = ["source"]
    extra = 0
    can_delete = False
    show_change_link = False
    verbose_name = "input"
    verbose_name_plural = "inputs (alternatives per input index)"

    def has_add_permission(self, request, obj=None):
        # Inputs are part of the record's identity: changing them would make it lie.
        return False


class ResultInline(admin.TabularInline):
    model = Result
    fields = ["description", "complete", "created_at", "exported_at", "engine", "cache_ref_id"]
    readonly_fields = fields
    extra = 0
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Record)
class RecordAdmin(GraphChangeAdmin):
    list_display = ["short_identity", "description", "digest", "input_count", "has_result", "organization", "created_at"]
    list_filter = ["organization", "has_result"]
    search_fields = ["identity", "digest", "description", "results__description"]
    readonly_fields = ["organization", "identity", "digest", "input_count", "has_result", "created_at", "layer_chain"]
    fields = readonly_fields + ["description"]
    inlines = [RecordInputInline, ResultInline]
    list_select_related = ["organization"]
    show_full_result_count = False

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
                "", "<li><code>{}</code> {} ({} bytes)</li>", ((r.layer.digest, r.layer.media_type, r.layer.size) for r in rows)
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
        return obj.layer.size


@admin.register(Result)
class ResultAdmin(GraphChangeAdmin):
    list_display = ["__str__", "record", "complete", "created_at", "exported_at", "engine", "organization"]
    list_filter = ["record__organization", "complete"]
    search_fields = ["description", "record__identity", "record__digest", "chain_layers__layer__digest"]
    readonly_fields = ["record", "chain", "cache_ref_id", "created_at", "exported_at", "token", "engine"]
    fields = ["description", "complete"] + readonly_fields
    inlines = [ResultLayerInline]
    list_select_related = ["record", "record__organization", "engine"]
    show_full_result_count = False

    @admin.display(description="organization")
    def organization(self, obj):
        return obj.record.organization

    def organization_of(self, obj):
        return obj.record.organization

    def changed(self, objs):
        # has_result decides whether engines are asked to export the record again.
        for obj in objs:
            complete = Result.objects.filter(record_id=obj.record_id, complete=True).exists()
            Record.objects.filter(pk=obj.record_id).update(has_result=complete)
        super().changed(objs)

    def delete_model(self, request, obj):
        super().delete_model(request, obj)
        self.changed([obj])

    def delete_queryset(self, request, queryset):
        objs = list(queryset)
        super().delete_queryset(request, queryset)
        self.changed(objs)

    def get_search_results(self, request, queryset, search_term):
        queryset, duplicates = super().get_search_results(request, queryset, search_term)
        return queryset.distinct(), duplicates


@admin.register(Layer)
class LayerAdmin(GraphChangeAdmin):
    list_display = ["digest", "media_type", "size", "organization", "created_at", "last_used_at"]
    list_filter = ["organization", "media_type"]
    search_fields = ["digest", "diff_id"]
    readonly_fields = ["organization", "digest", "media_type", "size", "diff_id", "created_at", "last_used_at"]
    show_full_result_count = False


@admin.register(PendingExport)
class PendingExportAdmin(admin.ModelAdmin):
    list_display = ["record", "cache_ref_id", "description", "asked_at"]
    list_filter = ["record__organization"]
    search_fields = ["description", "record__identity", "cache_ref_id"]
    raw_id_fields = ["record"]
    readonly_fields = ["token"]


@admin.register(ImportSnapshot)
class ImportSnapshotAdmin(admin.ModelAdmin):
    list_display = ["organization", "generation", "built_generation", "record_count", "layer_count", "size", "built_at", "build_ms"]
    readonly_fields = ["organization", "built_generation", "etag", "size", "record_count", "layer_count", "built_at", "build_ms"]
    fields = ["generation"] + readonly_fields
