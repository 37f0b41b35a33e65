"""The migration that gives results their sizes fills them in for results already stored."""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

BEFORE = [("records", "0003_import_build_claim"), ("blobs", "0001_initial")]
AFTER = [("records", "0004_step_sizes_layer_contents")]


@pytest.mark.django_db(transaction=True)
def test_existing_results_get_their_sizes_top_layer_and_last_use():
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    old = executor.loader.project_state(BEFORE).apps
    Organization = old.get_model("accounts", "Organization")
    Record, Result = old.get_model("records", "Record"), old.get_model("records", "Result")
    Layer, ResultLayer = old.get_model("records", "Layer"), old.get_model("records", "ResultLayer")
    Blob = old.get_model("blobs", "Blob")
    org = Organization.objects.create(slug="old")
    now = timezone.now()
    layers = [
        Layer.objects.create(organization=org, digest=f"sha256:{n:064x}", media_type="m", size=size, diff_id=f"sha256:{n + 9:064x}")
        for n, size in enumerate([1000, 200, 30])
    ]
    Blob.objects.create(organization=org, digest=layers[2].digest, size=30, state="verified", last_used_at=now)
    record = Record.objects.create(organization=org, identity="sha256:" + "a" * 64, digest="sha256:" + "b" * 64, has_result=True)
    chained = Result.objects.create(record=record, chain="c1", created_at=now)
    for position, layer in enumerate(layers):
        ResultLayer.objects.create(result=chained, position=position, layer=layer)
    other = Record.objects.create(organization=org, identity="sha256:" + "c" * 64, digest="sha256:" + "d" * 64, has_result=True)
    single = Result.objects.create(record=other, chain="c2", created_at=now)
    ResultLayer.objects.create(result=single, position=0, layer=layers[0])

    executor = MigrationExecutor(connection)
    executor.migrate(AFTER)
    new = executor.loader.project_state(AFTER).apps.get_model("records", "Result")
    got = new.objects.get(pk=chained.pk)
    assert (got.size, got.chain_size, got.layer_count, got.top_digest) == (30, 1230, 3, layers[2].digest)
    assert got.last_used_at == now
    got = new.objects.get(pk=single.pk)
    assert (got.size, got.chain_size, got.layer_count, got.top_digest, got.last_used_at) == (1000, 1000, 1, layers[0].digest, None)
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())
