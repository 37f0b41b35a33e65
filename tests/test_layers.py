"""POST /magicache/layers: chains accepted only when complete and uploaded."""

import logging

import pytest

from accounts.models import Engine, EngineToken
from records.models import ImportSnapshot, Layer, PendingExport, Record, RecordInput, Result, ResultLayer
from tests.buildkit_oracle import (
    descriptor,
    key,
    link,
    post_layers,
    post_records,
    random_key_id,
    result,
    root_key,
    sha,
    store_blob,
)
from tests.support import engine_request

IMAGE = root_key(sha("docker-image://alpine"))


@pytest.fixture
def asked(client, org, token):
    """One record we asked the engine to export: its identity."""
    response = post_records(client, token, [key(IMAGE, result("ref-1", description="pull alpine"))], [])
    [entry] = response.json()["ExportRecords"]
    return entry["Digest"]


def chain(org, n=2, state="verified"):
    descs = []
    for i in range(n):
        digest = sha(f"blob {i}")
        store_blob(org, digest, 100 + i, state=state)
        descs.append(descriptor(digest, 100 + i, created_at="2026-11-20T08:00:00.5+01:00"))
    return descs


def test_requires_a_token(client, db):
    assert post_layers(client, None, []).status_code == 401


def test_read_only_token_is_403(client, org, ro_token, asked):
    response = post_layers(client, ro_token, [{"RecordDigest": asked, "Layers": chain(org)}])
    assert response.status_code == 403
    assert "read-only" in response.json()["error"]
    assert not Result.objects.exists()


def test_get_is_405(client, token):
    assert engine_request(client, "GET", "/magicache/layers", token, {}).status_code == 405


def test_accepts_a_complete_chain(client, org, token, asked):
    Engine.objects.create(organization=org, engine_id="engine-1", last_token=EngineToken.objects.get(label="rw"))
    layers = chain(org)
    response = post_layers(client, token, [{"RecordDigest": asked, "Layers": layers}])
    assert response.status_code == 200
    assert response.json() == {"Accepted": [asked], "Refused": []}
    record = Record.objects.get(identity=asked)
    assert record.has_result
    res = record.results.get()
    assert res.complete and res.cache_ref_id == "ref-1" and res.description == "pull alpine"
    assert res.engine.engine_id == "engine-1"
    assert list(res.chain_layers.values_list("position", "layer__digest")) == [(0, sha("blob 0")), (1, sha("blob 1"))]
    layer = Layer.objects.get(digest=sha("blob 1"))
    assert layer.size == 101 and layer.media_type.endswith("tar+zstd")
    assert layer.diff_id == layers[1]["annotations"]["containerd.io/uncompressed"]
    assert layer.created_at.isoformat() == "2026-11-20T07:00:00.500000+00:00"
    assert not PendingExport.objects.exists()


def test_accepted_record_is_not_asked_for_again(client, org, token, asked):
    post_layers(client, token, [{"RecordDigest": asked, "Layers": chain(org)}])
    PendingExport.objects.all().delete()
    response = post_records(client, token, [key(IMAGE, result("ref-2"))], [])
    assert response.json() == {"ExportRecords": []}


def test_same_chain_twice_is_one_result(client, org, token, asked):
    layers = chain(org)
    post_layers(client, token, [{"RecordDigest": asked, "Layers": layers}])
    post_layers(client, token, [{"RecordDigest": asked, "Layers": layers}])
    assert Result.objects.count() == 1


def test_acceptance_invalidates_the_import(client, org, token, asked, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        post_layers(client, token, [{"RecordDigest": asked, "Layers": chain(org)}])
    snapshot = ImportSnapshot.objects.get(organization=org)
    assert snapshot.generation > snapshot.built_generation
    # The rebuild is queued once committed (the other callback writes the activity counts).
    assert [c.__qualname__ for c in callbacks if c.__module__ == "cacheweb.outbox"] == ["enqueue.<locals>.<lambda>"]
    from cacheweb.models import OutboxTask

    assert list(OutboxTask.objects.values_list("task", "args")) == [("records.tasks.rebuild_import", [org.pk])]


def missing(field):
    def change(desc):
        desc.pop(field)
        return desc

    return change


def annotation(value):
    def change(desc):
        if value is None:
            desc["annotations"].pop("containerd.io/uncompressed")
        else:
            desc["annotations"]["containerd.io/uncompressed"] = value
        return desc

    return change


@pytest.mark.parametrize(
    "change, reason",
    [
        (missing("digest"), "is not a digest"),
        (missing("size"), "no valid size"),
        (missing("mediaType"), "no valid media type"),
        (missing("annotations"), "containerd.io/uncompressed"),
        (annotation(None), "containerd.io/uncompressed"),
        (annotation("not-a-digest"), "containerd.io/uncompressed"),
        (lambda d: {**d, "size": -1}, "no valid size"),
        (lambda d: {**d, "size": "100"}, "no valid size"),
        (lambda d: {**d, "digest": "sha256:1234"}, "is not a digest"),
        (lambda d: "descriptor", "not an object"),
    ],
)
def test_incomplete_descriptors_are_refused(client, org, token, asked, change, reason, caplog):
    layers = chain(org)
    layers[1] = change(layers[1])
    with caplog.at_level(logging.WARNING, logger="cacheweb.records"):
        response = post_layers(client, token, [{"RecordDigest": asked, "Layers": layers}])
    assert response.status_code == 200
    body = response.json()
    assert body["Accepted"] == []
    assert body["Refused"][0]["RecordDigest"] == asked
    assert reason in body["Refused"][0]["Reason"]
    assert asked in caplog.text
    assert not Result.objects.exists()
    assert not Record.objects.get(identity=asked).has_result


def test_blob_not_uploaded_is_refused(client, org, token, asked):
    layers = chain(org)
    layers.append(descriptor(sha("never uploaded"), 5))
    body = post_layers(client, token, [{"RecordDigest": asked, "Layers": layers}]).json()
    assert body["Accepted"] == []
    assert "not uploaded and verified" in body["Refused"][0]["Reason"]


def test_blob_pending_is_refused(client, org, token, asked):
    body = post_layers(client, token, [{"RecordDigest": asked, "Layers": chain(org, state="pending")}]).json()
    assert body["Accepted"] == []
    assert "not uploaded and verified" in body["Refused"][0]["Reason"]


def test_blob_of_another_organization_does_not_count(client, org, other_org, token, asked):
    layers = chain(other_org)
    body = post_layers(client, token, [{"RecordDigest": asked, "Layers": layers}]).json()
    assert body["Accepted"] == []


def test_size_must_match_the_stored_blob(client, org, token, asked):
    layers = chain(org)
    layers[0]["size"] += 1
    body = post_layers(client, token, [{"RecordDigest": asked, "Layers": layers}]).json()
    assert "bytes, the descriptor says" in body["Refused"][0]["Reason"]


def test_empty_chain_is_refused(client, org, token, asked):
    for layers in ([], None):
        body = post_layers(client, token, [{"RecordDigest": asked, "Layers": layers}]).json()
        assert body["Accepted"] == [] and "no layers" in body["Refused"][0]["Reason"]


def test_unknown_and_foreign_records_are_refused(client, org, token, other_token, asked):
    layers = chain(org)
    body = post_layers(client, token, [{"RecordDigest": sha("not ours"), "Layers": layers}]).json()
    assert body["Refused"][0]["Reason"] == "not a record of this organization"
    # another organization cannot attach results to our records
    body = post_layers(client, other_token, [{"RecordDigest": asked, "Layers": layers}]).json()
    assert body["Refused"][0]["Reason"] == "not a record of this organization"
    assert not Result.objects.exists()


def test_valid_entries_are_accepted_beside_refused_ones(client, org, token):
    keys = [key(IMAGE, result("a")), key(root_key(sha("other")), result("b"))]
    entries = post_records(client, token, keys, []).json()["ExportRecords"]
    layers = chain(org)
    updated = [
        {"RecordDigest": entries[0]["Digest"], "Layers": layers},
        {"RecordDigest": entries[1]["Digest"], "Layers": [descriptor(sha("missing"), 1)]},
    ]
    body = post_layers(client, token, updated).json()
    assert body["Accepted"] == [entries[0]["Digest"]]
    assert [r["RecordDigest"] for r in body["Refused"]] == [entries[1]["Digest"]]
    assert Result.objects.count() == 1


def test_null_updated_records_is_empty(client, token):
    for body in ({}, {"UpdatedRecords": None}):
        response = engine_request(client, "POST", "/magicache/layers", token, body)
        assert response.status_code == 200
        assert response.json() == {"Accepted": [], "Refused": []}


@pytest.mark.parametrize(
    "raw",
    [b"{oops", b"[]", b'{"UpdatedRecords": {}}', b'{"UpdatedRecords": [3]}', b'{"UpdatedRecords": [{"RecordDigest": 1}]}', b'{"UpdatedRecords": [{"RecordDigest": "d", "Layers": {}}]}'],
)
def test_structural_errors_are_400(client, org, token, raw):
    response = engine_request(client, "POST", "/magicache/layers", token, raw=raw)
    assert response.status_code == 400
    assert "error" in response.json()
    assert not Result.objects.exists()


def test_lost_blob_makes_the_record_wanted_again(client, org, token, asked):
    from blobs.models import Blob

    post_layers(client, token, [{"RecordDigest": asked, "Layers": chain(org)}])
    Blob.objects.filter(organization=org, digest=sha("blob 0")).delete()
    assert not Record.objects.get(identity=asked).has_result
    assert not Result.objects.get().complete
    PendingExport.objects.all().delete()
    response = post_records(client, token, [key(IMAGE, result("ref-3"))], [])
    assert [e["CacheRefID"] for e in response.json()["ExportRecords"]] == ["ref-3"]


def test_deleting_the_organization_deletes_its_graph(client, org, token, asked):
    post_layers(client, token, [{"RecordDigest": asked, "Layers": chain(org)}])
    get = engine_request(client, "GET", "/magicache/import", token)
    assert get.status_code == 200
    # A record with an input: RecordInput has no database constraints (docs/schema.md),
    # so its rows must go through Django's cascade.
    k = random_key_id()
    post_records(client, token, [key(IMAGE), key(k, result("ref-2"))], [link(k, IMAGE, 0, sha("exec"))])
    assert RecordInput.objects.filter(organization=org).count() == 1
    org.delete()
    assert not Record.objects.exists() and not Result.objects.exists() and not Layer.objects.exists()
    assert not RecordInput.objects.exists() and not ResultLayer.objects.exists()
    assert not ImportSnapshot.objects.exists()
