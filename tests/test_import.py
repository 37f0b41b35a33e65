"""GET /magicache/import: buildkit's cache config, built once per change, served stored."""

import gzip
from datetime import timedelta
import json

import pytest

from blobs.models import Blob
from records import importconfig
from records.models import ImportSnapshot, Record
from records.tasks import rebuild_import
from tests.buildkit_oracle import (
    ImportedCache,
    ParseFailure,
    Query,
    descriptor,
    get_import,
    key,
    link,
    output_key,
    post_layers,
    post_records,
    random_key_id,
    result,
    root_key,
    sha,
    store_blob,
)
from tests.support import chunked_request, engine_request

IMAGE_DIGEST = sha("docker-image://golang")
IMAGE = root_key(IMAGE_DIGEST)
EXEC_DIGEST = sha("exec go build")
EXEC = output_key(EXEC_DIGEST)


def export(client, org, token, keys, links, chains):
    """Post a graph, then deliver every asked ref with chains[ref] (a list of blob names)."""
    asked = post_records(client, token, keys, links).json()["ExportRecords"]
    updated = []
    for entry in asked:
        if entry["CacheRefID"] not in chains:
            continue
        layers = []
        for name in chains[entry["CacheRefID"]]:
            store_blob(org, sha(name), len(name))
            layers.append(descriptor(sha(name), len(name)))
        updated.append({"RecordDigest": entry["Digest"], "Layers": layers})
    body = post_layers(client, token, updated).json()
    assert body["Refused"] == []
    return asked


def test_requires_a_token(client, db):
    assert engine_request(client, "GET", "/magicache/import").status_code == 401


def test_post_is_405(client, token):
    assert engine_request(client, "POST", "/magicache/import", token, {}).status_code == 405


def test_empty_organization_gets_a_valid_empty_config(client, token):
    config = get_import(client, token)
    assert config == {"layers": [], "records": []}
    ImportedCache(config)


def test_read_only_token_may_import(client, org, token, ro_token):
    export(client, org, token, [key(IMAGE, result("r"))], [], {"r": ["base"]})
    assert len(get_import(client, ro_token)["records"]) == 1


def test_organizations_do_not_see_each_other(client, org, token, other_token):
    export(client, org, token, [key(IMAGE, result("r"))], [], {"r": ["base"]})
    assert get_import(client, other_token) == {"layers": [], "records": []}


def test_config_of_a_small_build(client, org, token):
    k = random_key_id()
    keys = [key(IMAGE, result("img")), key(k, result("exec"))]
    export(client, org, token, keys, [link(k, IMAGE, 0, EXEC, sha("sel"))], {"img": ["base"], "exec": ["base", "top"]})
    config = get_import(client, token)
    records = {r["digest"]: r for r in config["records"]}
    assert set(records) == {IMAGE, EXEC}
    image_index = config["records"].index(records[IMAGE])
    assert records[EXEC]["inputs"] == [[{"selector": sha("sel"), "link": image_index}]]
    assert "inputs" not in records[IMAGE]
    # the chain prefix "base" is shared: three layers would mean it is repeated
    assert len(config["layers"]) == 2
    top = config["layers"][records[EXEC]["layers"][0]["layer"]]
    base = config["layers"][records[IMAGE]["layers"][0]["layer"]]
    assert top["blob"] == sha("top") and config["layers"][top["parent"]] is base
    assert base["parent"] == -1
    for layer in config["layers"]:
        assert "parent" in layer
        assert set(layer["annotations"]) == {"mediaType", "diffID", "size", "createdAt"}
    cache = ImportedCache(config)
    assert cache.lookup(Query(EXEC_DIGEST, 0, ((Query(IMAGE_DIGEST), sha("sel")),))) == {(sha("base"), sha("top"))}
    assert cache.lookup(Query(EXEC_DIGEST, 0, ((Query(IMAGE_DIGEST), ""),))) == set()


def test_parent_zero_is_written(client, org, token):
    """Go omits a 0 parent with omitempty; we always write it."""
    export(client, org, token, [key(IMAGE, result("r"))], [], {"r": ["a", "b"]})
    raw = gzip.decompress(engine_request(client, "GET", "/magicache/import", token, HTTP_ACCEPT_ENCODING="gzip").content)
    layers = json.loads(raw)["layers"]
    assert [layer["parent"] for layer in layers] == [-1, 0]
    assert b'"parent":0' in raw


def test_records_without_results_only_as_inputs(client, org, token):
    k, lone = random_key_id(), random_key_id()
    keys = [key(IMAGE), key(k, result("exec")), key(root_key(sha("unused"))), key(lone)]
    links = [link(k, IMAGE, 0, EXEC), link(lone, IMAGE, 0, output_key(sha("lone")))]
    export(client, org, token, keys, links, {"exec": ["x"]})
    digests = {r["digest"] for r in get_import(client, token)["records"]}
    assert digests == {IMAGE, EXEC}


def test_not_delivered_results_are_absent(client, org, token):
    export(client, org, token, [key(IMAGE, result("r"))], [], {})
    assert get_import(client, token) == {"layers": [], "records": []}


def test_one_result_per_record_the_newest(client, org, token):
    asked = export(client, org, token, [key(IMAGE, result("r"))], [], {"r": ["first"]})
    store_blob(org, sha("second"), 6)
    post_layers(client, token, [{"RecordDigest": asked[0]["Digest"], "Layers": [descriptor(sha("second"), 6)]}])
    config = get_import(client, token)
    [record] = config["records"]
    assert len(record["layers"]) == 1
    assert config["layers"][record["layers"][0]["layer"]]["blob"] == sha("second")
    assert [layer["blob"] for layer in config["layers"]] == [sha("second")]


def test_result_with_a_lost_blob_falls_back_to_an_older_one(client, org, token):
    asked = export(client, org, token, [key(IMAGE, result("r"))], [], {"r": ["first"]})
    store_blob(org, sha("second"), 6)
    post_layers(client, token, [{"RecordDigest": asked[0]["Digest"], "Layers": [descriptor(sha("second"), 6)]}])
    Blob.objects.filter(organization=org, digest=sha("second")).update(state="pending")
    importconfig.rebuild(org)  # a state change is not a deletion: rebuilt by hand here
    ImportSnapshot.objects.filter(organization=org).update(generation=99)
    config = get_import(client, token)
    assert [layer["blob"] for layer in config["layers"]] == [sha("first")]


def test_deleted_blob_leaves_the_import(client, org, token):
    export(client, org, token, [key(IMAGE, result("r"))], [], {"r": ["only"]})
    assert get_import(client, token)["records"]
    Blob.objects.filter(organization=org, digest=sha("only")).delete()
    assert get_import(client, token) == {"layers": [], "records": []}


def test_blob_file_lost_from_disk_leaves_the_import_and_is_asked_for_again(client, org, token):
    """The rows say verified but the data dir lost the file: the next check of the blob
    marks it pending, the import stops naming it and /records asks for the record again."""
    from blobs.storage import get_store

    keys = [key(IMAGE, result("r"))]
    export(client, org, token, keys, [], {"r": ["vanishing"]})
    assert get_import(client, token)["records"]
    get_store().path(org.pk, sha("vanishing")).unlink()
    resp = engine_request(client, "GET", "/magicache/layerDownloadURL", token, {"Digest": sha("vanishing")})
    assert resp.status_code == 404
    assert get_import(client, token) == {"layers": [], "records": []}
    asked = post_records(client, token, keys, []).json()["ExportRecords"]
    assert [entry["CacheRefID"] for entry in asked] == ["r"]


def test_served_from_the_stored_copy(client, org, token, django_assert_max_num_queries):
    export(client, org, token, [key(IMAGE, result("r"))], [], {"r": ["base"]})
    first = engine_request(client, "GET", "/magicache/import", token, HTTP_ACCEPT_ENCODING="gzip")
    built_at = ImportSnapshot.objects.get(organization=org).built_at
    with django_assert_max_num_queries(4):
        again = engine_request(client, "GET", "/magicache/import", token, HTTP_ACCEPT_ENCODING="gzip")
    assert again.content == first.content
    assert ImportSnapshot.objects.get(organization=org).built_at == built_at


def test_rebuilt_after_a_change(client, org, token):
    export(client, org, token, [key(IMAGE, result("r"))], [], {"r": ["base"]})
    before = get_import(client, token)
    k = random_key_id()
    export(client, org, token, [key(IMAGE), key(k, result("e"))], [link(k, IMAGE, 0, EXEC)], {"e": ["top"]})
    after = get_import(client, token)
    assert len(after["records"]) == 2 and after != before


def test_gzip_etag_and_plain(client, org, token):
    export(client, org, token, [key(IMAGE, result("r"))], [], {"r": ["base"]})
    zipped = engine_request(client, "GET", "/magicache/import", token, HTTP_ACCEPT_ENCODING="gzip, deflate")
    assert zipped["Content-Encoding"] == "gzip"
    assert zipped["Content-Type"] == "application/json"
    assert "Accept-Encoding" in zipped["Vary"]
    plain = engine_request(client, "GET", "/magicache/import", token)
    assert not plain.has_header("Content-Encoding")
    assert json.loads(plain.content) == json.loads(gzip.decompress(zipped.content))
    assert zipped["ETag"] == plain["ETag"] and zipped["ETag"].startswith('"')
    refused = engine_request(client, "GET", "/magicache/import", token, HTTP_ACCEPT_ENCODING="gzip;q=0")
    assert not refused.has_header("Content-Encoding")
    unchanged = engine_request(client, "GET", "/magicache/import", token, HTTP_IF_NONE_MATCH=plain["ETag"])
    assert unchanged.status_code == 304 and unchanged.content == b""


def test_deterministic(client, org, token):
    ids = [random_key_id() for _ in range(6)]
    keys = [key(IMAGE, result("img"))] + [key(i, result(f"r{n}")) for n, i in enumerate(ids)]
    links = [link(i, IMAGE if n == 0 else ids[n - 1], 0, output_key(sha(f"op {n}"))) for n, i in enumerate(ids)]
    export(client, org, token, keys, links, {f"r{n}": ["base", f"l{n}"] for n in range(6)} | {"img": ["base"]})
    first = importconfig.render(org)
    second = importconfig.render(org)
    assert first.body == second.body and first.etag == second.etag


def test_celery_task_builds_and_is_safe_twice(client, org, token):
    export(client, org, token, [key(IMAGE, result("r"))], [], {"r": ["base"]})
    rebuild_import(org.pk)
    snapshot = ImportSnapshot.objects.get(organization=org)
    assert snapshot.current and snapshot.record_count == 1
    rebuild_import(org.pk)
    assert ImportSnapshot.objects.get(organization=org).built_at == snapshot.built_at
    rebuild_import(987654)  # a deleted organization is not an error


def test_stale_build_never_overwrites_a_newer_one(org):
    ImportSnapshot.objects.create(organization=org, generation=5, built_generation=5, body_gzip=gzip.compress(b"{}"), etag='"x"')
    assert importconfig.rebuild(org) is None
    assert ImportSnapshot.objects.get(organization=org).etag == '"x"'


def test_the_rebuild_waits_for_commit_and_is_queued_once(client, org, token, django_capture_on_commit_callbacks, monkeypatch):
    queued = []
    monkeypatch.setattr("records.tasks.rebuild_import.apply_async", lambda args, **kw: queued.append(args[0]))
    post_records(client, token, [key(IMAGE, result("r"))], [])
    store_blob(org, sha("b"), 1)
    digest = Record.objects.get(organization=org).identity
    with django_capture_on_commit_callbacks(execute=True):
        post_layers(client, token, [{"RecordDigest": digest, "Layers": [descriptor(sha("b"), 1)]}])
    assert queued == [org.pk]


class TestCheckConfig:
    """The last line of defence: what buildkit would refuse is never served."""

    def good(self):
        return {
            "layers": [{"blob": sha("a"), "parent": -1, "annotations": {"diffID": sha("d")}}],
            "records": [{"digest": IMAGE, "layers": [{"layer": 0}]}, {"digest": EXEC, "inputs": [[{"selector": "", "link": 0}]]}],
        }

    def test_good(self):
        importconfig.check_config(self.good())

    @pytest.mark.parametrize(
        "damage",
        [
            lambda c: c["layers"][0]["annotations"].pop("diffID"),
            lambda c: c["layers"][0].update(parent=0),
            lambda c: c["records"][0].update(layers=[{"layer": 3}]),
            lambda c: c["records"][1].update(inputs=[[{"selector": "", "link": 9}]]),
            lambda c: c["records"][1].update(inputs=[[]]),
            lambda c: c["records"][0].update(inputs=[[{"selector": "", "link": 1}]]),
            lambda c: c["records"].append({"digest": IMAGE}),
            lambda c: c["records"].append({"digest": "random:" + "0" * 64}),
            lambda c: c["records"][0].update(layers=[{"layer": 0}, {"layer": 0}]),
        ],
    )
    def test_refused(self, damage):
        config = self.good()
        damage(config)
        with pytest.raises(importconfig.InvalidConfig):
            importconfig.check_config(config)


class TestOracleCatchesWhatBuildkitRefuses:
    """The oracle must fail where buildkit fails, or the property tests prove nothing."""

    @pytest.mark.parametrize(
        "config",
        [
            {"layers": [{"blob": sha("a"), "parent": -1}], "records": []},
            {"layers": [{"blob": sha("a"), "parent": -1, "annotations": {"mediaType": "x"}}], "records": []},
            {"layers": [], "records": [{"digest": IMAGE, "inputs": [[{"link": 0}]]}]},
            {"layers": [], "records": [{"digest": IMAGE, "inputs": [[{"link": 4}]]}]},
            {"layers": [], "records": [{"digest": IMAGE, "layers": [{"layer": 0}]}]},
            {"layers": [{"blob": sha("a"), "annotations": {"diffID": sha("d")}}], "records": [{"digest": IMAGE, "layers": [{"layer": 0}]}]},
            {"layers": [], "records": [{"digest": 5}]},
            {"layers": [{"blob": sha("a"), "parent": -1, "annotations": {"diffID": sha("d"), "createdAt": "now"}}]},
        ],
    )
    def test_parse_failures(self, config):
        with pytest.raises(ParseFailure):
            ImportedCache(config)

    def test_second_root_with_the_same_digest_drops_the_first_ones_links(self):
        layer = {"blob": sha("a"), "parent": -1, "annotations": {"diffID": sha("d")}}
        config = {
            "layers": [layer],
            "records": [
                {"digest": IMAGE},
                {"digest": EXEC, "inputs": [[{"link": 0}]], "layers": [{"layer": 0}]},
                {"digest": IMAGE},
            ],
        }
        assert ImportedCache(config).lookup(Query(EXEC_DIGEST, 0, ((Query(IMAGE_DIGEST), ""),))) == set()
        config["records"].pop()
        assert ImportedCache(config).lookup(Query(EXEC_DIGEST, 0, ((Query(IMAGE_DIGEST), ""),))) == {(sha("a"),)}

    def test_links_from_random_records_vanish(self):
        config = {"records": [{"digest": "random:" + "1" * 64}, {"digest": EXEC, "inputs": [[{"link": 0}]]}]}
        cache = ImportedCache(config)
        # the dependant lost its only input and became a root under its own digest
        assert EXEC in cache.by_id


def test_chunked_request_through_gunicorn(live_service, org, token):
    """The engine's bodies arrive chunked; gunicorn de-chunks and the view sees them whole."""
    from tests.support import basic

    body = json.dumps({"CacheKeys": [{"ID": IMAGE, "Results": [{"ID": "r", "CreatedAt": "2026-01-01T00:00:00Z"}]}], "Links": None}).encode() + b"\n"
    status, _, raw = chunked_request(
        live_service.url,
        "POST",
        "/magicache/records",
        {"Authorization": basic(token), "Content-Type": "application/json"},
        [body[:10], body[10:]],
    )
    assert status == 200, raw
    assert [e["CacheRefID"] for e in json.loads(raw)["ExportRecords"]] == ["r"]
    status, headers, raw = chunked_request(
        live_service.url, "GET", "/magicache/import", {"Authorization": basic(token), "Accept-Encoding": "gzip"}, []
    )
    assert status == 200
    assert json.loads(gzip.decompress(raw) if headers.get("content-encoding") == "gzip" else raw) == {"layers": [], "records": []}


def test_corrupted_rows_never_reach_an_engine(client, org, token):
    """A loop made by hand in the database: the last good import is served, not a 500."""
    from records.models import RecordInput

    k = random_key_id()
    export(client, org, token, [key(IMAGE, result("img")), key(k, result("e"))], [link(k, IMAGE, 0, EXEC)], {"img": ["a"], "e": ["b"]})
    good = get_import(client, token)
    image, execution = Record.objects.get(digest=IMAGE), Record.objects.get(digest=EXEC)
    RecordInput.objects.create(organization=org, record=image, index=0, selector="", source=execution)
    Record.objects.filter(pk=image.pk).update(input_count=1)
    ImportSnapshot.objects.filter(organization=org).update(generation=100)
    assert get_import(client, token) == good
    ImportSnapshot.objects.filter(organization=org).delete()
    assert get_import(client, token) == {"layers": [], "records": []}


def test_result_with_a_missing_layer_row_is_left_out(client, org, token):
    from records.models import Layer

    export(client, org, token, [key(IMAGE, result("r"))], [], {"r": ["a", "b"]})
    Layer.objects.filter(organization=org, digest=sha("a")).delete()
    ImportSnapshot.objects.filter(organization=org).update(generation=50)
    assert get_import(client, token) == {"layers": [], "records": []}


def test_one_builder_at_a_time_others_serve_the_stored_body(client, org, token, settings):
    settings.IMPORT_WAIT = 0  # tests/test_import_fresh.py waits for the build
    export(client, org, token, [key(IMAGE, result("r"))], [], {"r": ["base"]})
    first = get_import(client, token)
    k = random_key_id()
    export(client, org, token, [key(IMAGE), key(k, result("e"))], [link(k, IMAGE, 0, EXEC)], {"e": ["top"]})
    from django.utils import timezone

    ImportSnapshot.objects.filter(organization=org).update(building_since=timezone.now())
    assert get_import(client, token) == first  # stale, but someone else is building
    assert importconfig.rebuild(org) is None
    ImportSnapshot.objects.filter(organization=org).update(building_since=timezone.now() - importconfig.BUILD_CLAIM * 2)
    assert len(get_import(client, token)["records"]) == 2  # that builder died: build here
    assert ImportSnapshot.objects.get(organization=org).building_since is None


def test_first_build_does_not_wait_for_a_claim(client, org, token):
    from django.utils import timezone

    ImportSnapshot.objects.create(organization=org, building_since=timezone.now())
    assert get_import(client, token) == {"layers": [], "records": []}


def _small_build(client, org, token):
    k = random_key_id()
    keys = [key(IMAGE, result("img")), key(k, result("exec"))]
    links = [link(k, IMAGE, 0, EXEC, sha("sel"))]
    export(client, org, token, keys, links, {"img": ["base"], "exec": ["base", "top"]})
    return keys, links


def test_deleting_a_record_by_hand_takes_its_dependants_and_heals_on_the_next_export(client, org, token):
    from records.models import Record

    keys, links = _small_build(client, org, token)
    Record.objects.get(digest=IMAGE).delete()
    assert not Record.objects.filter(digest=EXEC).exists()
    config = get_import(client, token)
    ImportedCache(config)  # parses as buildkit would
    assert config == {"layers": [], "records": []}
    # The next export stores both again, whole, and asks for both results.
    asked = export(client, org, token, keys, links, {"img": ["base"], "exec": ["base", "top"]})
    assert sorted(entry["CacheRefID"] for entry in asked) == ["exec", "img"]
    cache = ImportedCache(get_import(client, token))
    assert cache.lookup(Query(EXEC_DIGEST, 0, ((Query(IMAGE_DIGEST), sha("sel")),))) == {(sha("base"), sha("top"))}


def test_deleting_a_layer_by_hand_makes_its_results_asked_for_again(client, org, token):
    from records.models import Layer

    keys, links = _small_build(client, org, token)
    Layer.objects.get(organization=org, digest=sha("top")).delete()
    config = get_import(client, token)
    assert [r["digest"] for r in config["records"] if r.get("layers")] == [IMAGE]
    asked = post_records(client, token, keys, links).json()["ExportRecords"]
    assert [entry["CacheRefID"] for entry in asked] == ["exec"]


def test_a_database_error_during_a_build_never_leaves_the_claim_held(transactional_db, client, org, token, monkeypatch, settings):
    settings.IMPORT_WAIT = 0
    from django.db import OperationalError
    from django.utils import timezone

    export(client, org, token, [key(IMAGE, result("r"))], [], {"r": ["base"]})
    assert len(get_import(client, token)["records"]) == 1
    k = random_key_id()
    export(client, org, token, [key(IMAGE), key(k, result("e"))], [link(k, IMAGE, 0, EXEC)], {"e": ["top"]})
    real_update = importconfig.ImportSnapshot.objects.filter

    def database_gone(organization):
        raise OperationalError("server closed the connection unexpectedly")

    # The connection breaks mid-build and the first release with it: the release is tried
    # again on a fresh connection.
    releases = []

    def filter_failing_once(*args, **kwargs):
        if "building_since" in kwargs and not releases:
            releases.append(kwargs)
            raise OperationalError("server closed the connection unexpectedly")
        return real_update(*args, **kwargs)

    monkeypatch.setattr(importconfig, "render", database_gone)
    monkeypatch.setattr(importconfig.ImportSnapshot.objects, "filter", filter_failing_once)
    with pytest.raises(OperationalError):
        importconfig.rebuild(org)
    monkeypatch.undo()
    assert releases and ImportSnapshot.objects.get(organization=org).building_since is None
    assert len(get_import(client, token)["records"]) == 2

    # The database stays down past the release: the claim lapses after a few times the
    # last build, not minutes, and the next /import builds.
    export(client, org, token, [key(root_key(sha("docker-image://other")), result("f"))], [], {"f": ["other"]})
    monkeypatch.setattr(importconfig, "render", database_gone)
    monkeypatch.setattr(importconfig, "_release", lambda pk, claimed_at: False)
    with pytest.raises(OperationalError):
        importconfig.rebuild(org)
    monkeypatch.undo()
    stuck = ImportSnapshot.objects.get(organization=org)
    assert stuck.building_since is not None
    assert len(get_import(client, token)["records"]) == 2  # the old body, one change behind, while claimed
    lifetime = importconfig.claim_lifetime(stuck.build_ms)
    assert lifetime == importconfig.BUILD_CLAIM_MIN
    ImportSnapshot.objects.filter(pk=stuck.pk).update(building_since=timezone.now() - lifetime - timedelta(seconds=1))
    assert len(get_import(client, token)["records"]) == 3
    assert ImportSnapshot.objects.get(organization=org).building_since is None
