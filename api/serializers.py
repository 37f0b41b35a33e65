"""What the operator API reads and answers. Output serializers describe the rows the
selectors (records.steps, dashboard.queries) return; the schema is generated from them."""

from rest_framework import serializers

from accounts.models import MAX_PERIOD, EngineToken, Organization
from records.steps import MAX_AGE_DAYS, MAX_TEXT, STEP_SORTS, USED_CHOICES


class OrganizationSerializer(serializers.ModelSerializer):
    class Meta:
        model = Organization
        fields = ["slug", "name", "import_period", "export_period", "export_timeout", "created_at"]


class EngineRefSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    engine_id = serializers.CharField()


class StepSerializer(serializers.Serializer):
    """A row of step_listing (a current Result, with its record) after describe_steps."""

    id = serializers.IntegerField(source="record_id", help_text="the record's id: the step's id")
    description = serializers.CharField(source="record.description")
    digest = serializers.CharField(source="record.digest")
    size = serializers.IntegerField(help_text="bytes of the step's own (top) layer")
    chain_size = serializers.IntegerField(help_text="bytes of the whole layer chain")
    layer_count = serializers.IntegerField()
    exported_at = serializers.DateTimeField()
    last_used_at = serializers.DateTimeField(allow_null=True)
    engine = EngineRefSerializer(allow_null=True, help_text="the engine that exported the current result")
    dependants = serializers.IntegerField(help_text="stored steps that take this one as an input")


class StepRefSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    description = serializers.CharField()
    digest = serializers.CharField()
    is_step = serializers.BooleanField(source="has_result", help_text="holds a complete result")


class InputAlternativeSerializer(serializers.Serializer):
    selector = serializers.CharField()
    source = StepRefSerializer()


class InputSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    alternatives = InputAlternativeSerializer(many=True)


class ChainLayerSerializer(serializers.Serializer):
    position = serializers.IntegerField(help_text="0 is the base layer")
    digest = serializers.CharField(source="layer.digest")
    media_type = serializers.CharField(source="layer.media_type")
    size = serializers.IntegerField(source="layer.size")
    diff_id = serializers.CharField(source="layer.diff_id")
    created_at = serializers.DateTimeField(source="layer.created_at", allow_null=True)
    blob_state = serializers.SerializerMethodField(help_text="verified, pending, or null when the blob is gone")

    def get_blob_state(self, link) -> str | None:
        return link.blob.state if link.blob is not None else None


class StepDetailSerializer(serializers.Serializer):
    id = serializers.IntegerField(source="record.pk")
    description = serializers.CharField(source="record.description")
    digest = serializers.CharField(source="record.digest")
    identity = serializers.CharField(source="record.identity")
    has_result = serializers.BooleanField(source="record.has_result")
    size = serializers.IntegerField(source="result.size", allow_null=True, default=None)
    chain_size = serializers.IntegerField(source="result.chain_size", allow_null=True, default=None)
    exported_at = serializers.DateTimeField(source="result.exported_at", allow_null=True, default=None)
    last_used_at = serializers.DateTimeField(source="result.last_used_at", allow_null=True, default=None)
    results = serializers.SerializerMethodField(help_text="results the record holds")
    inputs = serializers.SerializerMethodField()
    dependants = StepRefSerializer(many=True, help_text="records that take this one as an input (the first 200)")
    dependant_count = serializers.IntegerField()
    layers = ChainLayerSerializer(source="chain", many=True, help_text="the current result's chain, base first")

    def get_results(self, detail) -> int:
        return len(detail.results)

    def get_inputs(self, detail) -> InputSerializer(many=True):
        return InputSerializer(
            [{"index": index, "alternatives": alternatives} for index, alternatives in detail.inputs], many=True
        ).data


class EvictedSerializer(serializers.Serializer):
    """records.eviction.Evicted."""

    steps = serializers.IntegerField()
    results = serializers.IntegerField()
    blobs_deleted = serializers.DictField(child=serializers.IntegerField(), help_text="{digest: bytes}")
    blobs_kept = serializers.ListField(
        child=serializers.CharField(), help_text="blobs the store failed to delete: left for the next lifecycle pass"
    )
    freed_bytes = serializers.IntegerField()
    error = serializers.CharField()


class StepEvictionSerializer(serializers.Serializer):
    dry_run = serializers.BooleanField()
    step_ids = serializers.ListField(child=serializers.IntegerField(), help_text="the steps (record ids) that go")
    results = serializers.IntegerField()
    blobs = serializers.DictField(child=serializers.IntegerField(), help_text="{digest: bytes} deleted with them")
    freed_bytes = serializers.IntegerField()
    evicted = EvictedSerializer(allow_null=True, help_text="what was evicted; null on a dry run")


def _step_sort_choices():
    return [key for name in STEP_SORTS for key in (name, f"-{name}")]


class StepSearchSerializer(serializers.Serializer):
    """The StepQuery fields, for the schema only: records.steps.StepQuery.from_params
    validates them."""

    q = serializers.CharField(required=False, max_length=MAX_TEXT, help_text="substring of the description, any case")
    description = serializers.CharField(required=False, max_length=MAX_TEXT, help_text="the whole description")
    digest = serializers.CharField(required=False, help_text="prefix of the record's digest or identity")
    engine = serializers.IntegerField(required=False, min_value=0, help_text="id of the exporting engine")
    min_age_days = serializers.IntegerField(required=False, min_value=0, max_value=MAX_AGE_DAYS)
    max_age_days = serializers.IntegerField(required=False, min_value=0, max_value=MAX_AGE_DAYS)
    used = serializers.ChoiceField(required=False, choices=USED_CHOICES)
    layer = serializers.CharField(required=False, help_text="digest of a layer in the step's chain")
    sort = serializers.ChoiceField(required=False, choices=_step_sort_choices(), default="-created")


class StepEvictRequestSerializer(StepSearchSerializer):
    dry_run = serializers.BooleanField(required=False, default=False)


class BlobSerializer(serializers.Serializer):
    """A row of blob_listing after describe_blobs."""

    digest = serializers.CharField()
    size = serializers.IntegerField(allow_null=True)
    state = serializers.CharField()
    created_at = serializers.DateTimeField()
    verified_at = serializers.DateTimeField(allow_null=True)
    last_used_at = serializers.DateTimeField(allow_null=True)
    use_count = serializers.IntegerField()
    in_layer = serializers.BooleanField(help_text="a layer of the cache graph is this blob")
    result_count = serializers.IntegerField()
    step_count = serializers.IntegerField()
    snapshot_mount = serializers.SerializerMethodField(help_text="id of a mount whose live snapshot is this blob")
    exporter = EngineRefSerializer(allow_null=True)

    def get_snapshot_mount(self, blob) -> int | None:
        return blob.snapshot_mount.pk if blob.snapshot_mount else None


class SnapshotSerializer(serializers.Serializer):
    id = serializers.IntegerField(source="pk")
    digest = serializers.CharField()
    size = serializers.IntegerField()
    state = serializers.CharField()
    role = serializers.CharField(required=False, help_text="current, kept, released, pending or failed")
    created_at = serializers.DateTimeField()
    verified_at = serializers.DateTimeField(allow_null=True)
    released_at = serializers.DateTimeField(allow_null=True)
    file_count = serializers.IntegerField(allow_null=True)
    uncompressed_bytes = serializers.IntegerField(allow_null=True)
    engine = EngineRefSerializer(allow_null=True)


class MountSerializer(serializers.Serializer):
    """A row of mount_listing after with_current_snapshots."""

    id = serializers.IntegerField(source="pk")
    name = serializers.CharField()
    switch = serializers.CharField(help_text="policy, on or off")
    synced = serializers.BooleanField(required=False)
    size_limit = serializers.IntegerField(
        allow_null=True, help_text="largest snapshot accepted, bytes; null: the server default; 0: none"
    )
    effective_size_limit = serializers.IntegerField(help_text="the limit in force, bytes; 0: none")
    first_seen = serializers.DateTimeField()
    last_seen = serializers.DateTimeField()
    last_synced_at = serializers.DateTimeField(allow_null=True)
    live_snapshots = serializers.IntegerField(required=False)
    current = SnapshotSerializer(allow_null=True, required=False)


class MountDetailSerializer(MountSerializer):
    snapshots = SnapshotSerializer(source="snapshot_list", many=True)


class MountEvictedSerializer(serializers.Serializer):
    snapshots_deleted = serializers.IntegerField()
    blobs_deleted = serializers.DictField(child=serializers.IntegerField(), help_text="{digest: bytes}")
    freed_bytes = serializers.IntegerField()


class EngineTokenSerializer(serializers.ModelSerializer):
    prefix = serializers.CharField(read_only=True)
    revoked = serializers.BooleanField(read_only=True)

    class Meta:
        model = EngineToken
        fields = ["id", "prefix", "label", "read_only", "created_at", "last_used_at", "revoked_at", "revoked"]
        read_only_fields = ["id", "created_at", "last_used_at", "revoked_at"]


class NewEngineTokenSerializer(EngineTokenSerializer):
    token = serializers.CharField(read_only=True, help_text="the value: shown only in this answer")

    class Meta(EngineTokenSerializer.Meta):
        fields = EngineTokenSerializer.Meta.fields + ["token"]


class ErrorSerializer(serializers.Serializer):
    error = serializers.CharField()
    fields = serializers.DictField(required=False, help_text="each bad field and what is wrong with it")


class OrganizationUpdateSerializer(serializers.Serializer):
    """PATCH /orgs/{slug}/, for the schema: accounts.forms.OrganizationSettingsForm (the
    dashboard's settings form) validates the fields."""

    name = serializers.CharField(required=False, allow_blank=True, max_length=200)
    import_period = serializers.IntegerField(required=False, min_value=1, max_value=MAX_PERIOD, help_text="seconds")
    export_period = serializers.IntegerField(required=False, min_value=1, max_value=MAX_PERIOD, help_text="seconds")
    export_timeout = serializers.IntegerField(required=False, min_value=1, max_value=MAX_PERIOD, help_text="seconds")


class EngineSerializer(serializers.Serializer):
    """A row of accounts.engines.engine_listing: what the dashboard's engines page shows."""

    id = serializers.IntegerField(source="pk")
    engine_id = serializers.CharField()
    first_seen = serializers.DateTimeField()
    last_seen = serializers.DateTimeField()
    address = serializers.IPAddressField(source="remote_addr", allow_null=True)
    client = serializers.CharField(source="user_agent", help_text="the engine's User-Agent")
    last_token_prefix = serializers.SerializerMethodField(help_text="prefix of the engine token it last used")
    # activity.selectors.EngineActivity, over all kept activity; calls after /config are
    # matched to the engine by token and address (a best guess).
    last_import = serializers.DateTimeField(
        source="activity.last_import", allow_null=True, help_text="start of the last hour (or day) it was served an import"
    )
    last_export = serializers.DateTimeField(
        source="activity.last_export", allow_null=True, help_text="start of the last hour (or day) it delivered a record"
    )
    bytes_up = serializers.IntegerField(source="activity.bytes_up", help_text="bytes it uploaded (layers and mounts)")
    bytes_down = serializers.IntegerField(source="activity.bytes_down", help_text="bytes the built-in store served it")
    shared_steps = serializers.IntegerField(
        source="activity.shared_steps", help_text="steps it reported that another engine had already exported"
    )

    def get_last_token_prefix(self, engine) -> str | None:
        return engine.last_token.prefix if engine.last_token else None


class LifecycleBlobSerializer(serializers.Serializer):
    digest = serializers.CharField()
    size = serializers.IntegerField(allow_null=True)
    state = serializers.CharField()
    created_at = serializers.DateTimeField()
    verified_at = serializers.DateTimeField(allow_null=True)
    last_used_at = serializers.DateTimeField(allow_null=True)


class LifecycleSnapshotSerializer(serializers.Serializer):
    id = serializers.IntegerField(source="pk")
    mount = serializers.IntegerField(source="mount_id")
    mount_name = serializers.CharField(source="mount.name")
    digest = serializers.CharField()
    size = serializers.IntegerField()
    state = serializers.CharField()
    released_at = serializers.DateTimeField(allow_null=True)
    failed_at = serializers.DateTimeField(allow_null=True)


class LifecyclePendingExportSerializer(serializers.Serializer):
    id = serializers.IntegerField(source="pk")
    record = serializers.IntegerField(source="record_id")
    identity = serializers.CharField(source="record.identity")
    cache_ref_id = serializers.CharField()
    asked_at = serializers.DateTimeField()


def _kind_counts(help_text):
    return serializers.DictField(child=serializers.IntegerField(), help_text=help_text)


class LifecycleItemsSerializer(serializers.Serializer):
    released_snapshots = LifecycleSnapshotSerializer(many=True)
    failed_snapshots = LifecycleSnapshotSerializer(many=True)
    pending_exports = LifecyclePendingExportSerializer(many=True)
    unreferenced_blobs = LifecycleBlobSerializer(many=True)
    unused_blobs = LifecycleBlobSerializer(many=True)
    over_limit_blobs = LifecycleBlobSerializer(many=True)


class LifecycleReportSerializer(serializers.Serializer):
    """A retention.services.Report."""

    organization = serializers.CharField()
    dry_run = serializers.BooleanField(help_text="true: nothing was deleted, this is what would be")
    grace_seconds = serializers.SerializerMethodField(help_text="rows and blobs younger than this are kept")
    eviction = serializers.SerializerMethodField(help_text="the eviction policy in force")
    counts = _kind_counts("per kind, how many (all of them, listed or not)")
    bytes = _kind_counts("per blob kind, how many bytes")
    freed_bytes = serializers.IntegerField()
    kept = serializers.IntegerField(help_text="blobs the store failed to delete: left for the next pass")
    items = LifecycleItemsSerializer(help_text="per kind, the rows, in the order the pass takes them, up to `limit`")
    unlisted = serializers.SerializerMethodField(help_text="per kind, how many the items leave out")

    def get_grace_seconds(self, report) -> int:
        return int(report.grace.total_seconds())

    def get_eviction(self, report) -> str:
        return report.policy.describe()

    def get_unlisted(self, report) -> _kind_counts(""):
        return {kind: report.unlisted(kind) for kind in report.counts}
