"""An organization's cache graph: records, their inputs, results and the layers of results.

A record is content-addressed: `identity` is a hash over its buildkit digest and the
identities of its inputs (see records/graph.py), so engines whose non-root key IDs are
random land on the same rows for the same build.
"""

from django.db import models
from django.utils import timezone

from accounts.models import Engine, EngineToken, Organization
from records.fields import DigestBytesField

DIGEST_LENGTH = 71 + 64  # room for sha512 digests, whose hex is twice as long


class Record(models.Model):
    # The foreign key stays (see docs/schema.md): it is the one check that keeps a post
    # racing the deletion of its organization from leaving rows behind. Its own index
    # does not: organization_id leads both (organization, identity) and (organization, digest).
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="records", db_index=False
    )
    # 32 bytes in the column and the unique index; "sha256:<hex>" everywhere in Python.
    identity = DigestBytesField(
        help_text="our content address (digest plus inputs, recursively); the engine echoes it",
    )
    digest = models.CharField(max_length=DIGEST_LENGTH, help_text="buildkit's record digest")
    input_count = models.PositiveIntegerField(default=0)
    description = models.CharField(
        max_length=500, blank=True, help_text="what the engine said this was when first seen"
    )
    # Kept up to date by records.services so that /records can tell what to ask for
    # from the same query that maps identities to ids.
    has_result = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["organization", "identity"], name="record_unique_per_org")
        ]
        indexes = [models.Index(fields=["organization", "digest"])]

    def __str__(self):
        return self.description or self.digest


class RecordInput(models.Model):
    """One alternative for one input of a record: (input index, selector, input record)."""

    # No database constraints on the three foreign keys (docs/schema.md says why that is
    # safe): inputs are inserted only together with their new record, with ids read in the
    # same transaction, and records are deleted only with their organization, whose
    # foreign key on Record settles a race with that deletion. Django still cascades
    # deletes to these rows in Python (on_delete), as before.
    # Denormalized so an import can read an organization's whole graph in one query (the
    # Meta index serves that; the field's own index was a duplicate of it).
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="+", db_constraint=False, db_index=False
    )
    # record_id leads the unique (record, index, selector, source): no index of its own.
    record = models.ForeignKey(
        Record, on_delete=models.CASCADE, related_name="inputs", db_constraint=False, db_index=False
    )
    index = models.PositiveIntegerField()
    selector = models.CharField(max_length=DIGEST_LENGTH, blank=True)
    # Indexed: deleting records (with their organization) looks up their dependants.
    source = models.ForeignKey(Record, on_delete=models.CASCADE, related_name="dependants", db_constraint=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["record", "index", "selector", "source"], name="record_input_unique"
            )
        ]
        indexes = [models.Index(fields=["organization"])]
        ordering = ["record", "index", "selector"]

    def __str__(self):
        return f"input {self.index} of {self.record_id} from {self.source_id}"


class Layer(models.Model):
    """What buildkit needs to know about a blob used as a layer."""

    # organization_id leads the unique (organization, digest): no index of its own.
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="layers", db_index=False
    )
    digest = models.CharField(max_length=DIGEST_LENGTH)
    media_type = models.CharField(max_length=255)
    size = models.BigIntegerField()
    diff_id = models.CharField("diffID", max_length=DIGEST_LENGTH)
    created_at = models.DateTimeField(
        default=timezone.now, help_text="the layer's buildkit/createdat, else when first seen"
    )
    last_used_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["organization", "digest"], name="layer_unique_per_org")
        ]

    def __str__(self):
        return self.digest


class Result(models.Model):
    """A record's output as one ordered chain of layers, base layer first."""

    # The constraint stays: /layers inserts results for records it read, and only the
    # foreign key settles that against the deletion of the organization. record_id leads
    # the unique (record, chain) and the (record, complete) index: no index of its own.
    record = models.ForeignKey(Record, on_delete=models.CASCADE, related_name="results", db_index=False)
    # Hash of the ordered layer digests: the same chain delivered twice is one result.
    chain = models.CharField(max_length=71)
    complete = models.BooleanField(
        default=True, help_text="every layer's blob was present and verified when accepted"
    )
    cache_ref_id = models.CharField("engine cache ref", max_length=255, blank=True)
    description = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(help_text="when the engine created the result")
    exported_at = models.DateTimeField(default=timezone.now)
    token = models.ForeignKey(EngineToken, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    engine = models.ForeignKey(
        Engine,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="the engine last seen with the exporting token (exports do not name the engine)",
    )
    layers = models.ManyToManyField(Layer, through="ResultLayer", related_name="results")
    # A result's chain never changes once stored, so what the steps pages sort and show
    # is kept on the row instead of summed over the chain for every listing.
    size = models.BigIntegerField(default=0, help_text="bytes of the top layer (the step's own)")
    chain_size = models.BigIntegerField(default=0, help_text="bytes of the whole layer chain")
    layer_count = models.PositiveIntegerField(default=0)
    top_digest = models.CharField(max_length=DIGEST_LENGTH, blank=True, help_text="the top layer's digest")
    last_used_at = models.DateTimeField(
        null=True, blank=True, help_text="last download URL issued for the top layer since this result was stored"
    )

    class Meta:
        constraints = [models.UniqueConstraint(fields=["record", "chain"], name="result_chain_unique")]
        indexes = [models.Index(fields=["record", "complete"]), models.Index(fields=["top_digest"])]

    def __str__(self):
        return self.description or f"result {self.pk} of {self.record_id}"


class ResultLayer(models.Model):
    # Both constraints stay: eviction deletes results and layers while /layers may be
    # inserting chains that use them. result_id leads the unique (result, position).
    result = models.ForeignKey(Result, on_delete=models.CASCADE, related_name="chain_layers", db_index=False)
    position = models.PositiveIntegerField(help_text="0 is the base layer")
    # A result missing a layer is skipped by the import (its positions have a hole).
    layer = models.ForeignKey(Layer, on_delete=models.CASCADE, related_name="+")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["result", "position"], name="result_layer_position_unique")
        ]
        ordering = ["result", "position"]


class ContentsState(models.TextChoices):
    PENDING = "pending", "being indexed"
    COMPLETE = "complete", "complete"
    TRUNCATED = "truncated", "partial (a limit was reached)"
    INVALID = "invalid", "not a tar archive"
    MISSING = "missing", "blob not stored"


class LayerContents(models.Model):
    """What a layer's tar holds, indexed in the background the first time someone asks."""

    layer = models.OneToOneField(Layer, on_delete=models.CASCADE, related_name="contents")
    state = models.CharField(max_length=10, choices=ContentsState.choices, default=ContentsState.PENDING)
    summary = models.JSONField(null=True, blank=True, help_text="blobs.contents summary")
    listing = models.JSONField(null=True, blank=True, help_text="[[path, size, kind], ...], capped")
    file_count = models.BigIntegerField(null=True, blank=True)
    uncompressed_bytes = models.BigIntegerField(null=True, blank=True)
    requested_at = models.DateTimeField(default=timezone.now)
    indexed_at = models.DateTimeField(null=True, blank=True)

    def __str__(self):
        return f"contents of {self.layer_id} ({self.state})"


class PendingExport(models.Model):
    """A record we asked an engine to export and that has not arrived yet.

    It carries what the engine told us about the result, for the Result row, and when we
    asked, so that a ref the engine silently skipped is not asked for on every period.
    """

    record = models.OneToOneField(Record, on_delete=models.CASCADE, related_name="pending_export")
    cache_ref_id = models.CharField(max_length=255)
    description = models.CharField(max_length=500, blank=True)
    result_created_at = models.DateTimeField()
    asked_at = models.DateTimeField(default=timezone.now)
    token = models.ForeignKey(EngineToken, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")


class ImportSnapshot(models.Model):
    """The organization's /import body, built once per change of its graph or results.

    `generation` is bumped (in the same transaction) by every change; the body is current
    when `built_generation` equals it.
    """

    organization = models.OneToOneField(Organization, on_delete=models.CASCADE, related_name="import_snapshot")
    generation = models.BigIntegerField(default=1)
    built_generation = models.BigIntegerField(default=0)
    body_gzip = models.BinaryField(default=b"")
    etag = models.CharField(max_length=80, blank=True)
    size = models.BigIntegerField(default=0, help_text="uncompressed bytes")
    record_count = models.PositiveIntegerField(default=0)
    layer_count = models.PositiveIntegerField(default=0)
    built_at = models.DateTimeField(null=True, blank=True)
    build_ms = models.FloatField(default=0)
    building_since = models.DateTimeField(
        null=True, blank=True, help_text="a process is building the next body since then"
    )

    def __str__(self):
        return f"import of {self.organization} (generation {self.built_generation})"

    @property
    def current(self):
        return self.built_generation == self.generation and bool(self.body_gzip)


class EngineExportState(models.Model):
    """What the last /records analysis of one engine derived, to answer the same post again.

    An engine posts its whole key graph every export period, mostly unchanged. When the
    body is byte for byte the last one (`body_digest`) and the organization's records
    changed no result since (`generation` is ImportSnapshot.generation then), the
    analysis would give the same again: only the records still waiting for a result
    (`wanted`, kept only while short) go through the export bookkeeping again.
    """

    token = models.ForeignKey(EngineToken, on_delete=models.CASCADE, related_name="+")
    # accounts.Engine pk of the attributed engine, 0 when unknown; a plain number so
    # that an unknown engine is one row, not NULLs the unique constraint lets repeat.
    engine_ref = models.BigIntegerField(default=0)
    body_digest = models.CharField(max_length=64)
    generation = models.BigIntegerField()
    # [[record id, identity, ref id, created_at (ISO), description], ...]
    wanted = models.JSONField(default=list)
    stats = models.JSONField(default=dict, help_text="records.graph.Graph.stats() of the post")
    shared = models.PositiveIntegerField(default=0, help_text="records.services.shared_steps of the post")
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["token", "engine_ref"], name="engine_export_state_unique")
        ]

    def __str__(self):
        return f"export state of token {self.token_id} engine {self.engine_ref}"
