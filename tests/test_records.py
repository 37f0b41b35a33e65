"""POST /magicache/records: content-addressed records, ExportRecords, defects, limits."""

import logging
from datetime import timedelta

import pytest
import time_machine
from django.test import override_settings
from django.utils import timezone

from records.models import PendingExport, Record, RecordInput, Result
from tests.buildkit_oracle import key, link, output_key, post_records, random_key_id, result, root_key, sha
from tests.support import engine_request

IMAGE = root_key(sha("docker-image://golang:1.23"))
EXEC = output_key(sha("exec go build"))
COPY = output_key(sha("copy ."))
SELECTOR = sha("selector /src")


def build(engine_ids=None, with_results=True):
    """A small build as one engine reports it: image -> exec -> copy (two inputs)."""
    ids = engine_ids or [random_key_id(), random_key_id()]
    res = (lambda ref: [result(ref)]) if with_results else (lambda ref: [])
    keys = [key(IMAGE, *res("ref-image")), key(ids[0], *res("ref-exec")), key(ids[1], *res("ref-copy"))]
    links = [
        link(ids[0], IMAGE, 0, EXEC),
        link(ids[1], ids[0], 0, COPY, SELECTOR),
        link(ids[1], IMAGE, 1, COPY),
    ]
    return keys, links


def identities(response):
    return {entry["Digest"] for entry in response.json()["ExportRecords"]}


def test_requires_a_token(client, db):
    response = post_records(client, None, [], [])
    assert response.status_code == 401
    assert "error" in response.json()


def test_wrong_token_is_401(client, db):
    assert post_records(client, "cwt_nonsense", [], []).status_code == 401


def test_get_is_405(client, token):
    response = engine_request(client, "GET", "/magicache/records", token, {})
    assert response.status_code == 405
    assert "error" in response.json()


def test_exact_path_without_slash(client, token):
    assert engine_request(client, "POST", "/magicache/records/", token, {}).status_code == 404


def test_new_graph_asks_for_every_result(client, org, token):
    keys, links = build()
    response = post_records(client, token, keys, links)
    assert response.status_code == 200
    entries = response.json()["ExportRecords"]
    assert {e["CacheRefID"] for e in entries} == {"ref-image", "ref-exec", "ref-copy"}
    assert {e["Digest"] for e in entries} == set(Record.objects.filter(organization=org).values_list("identity", flat=True))
    assert Record.objects.filter(organization=org).count() == 3
    # copy has two inputs: exec with a selector, the image without
    copy = Record.objects.get(organization=org, digest=COPY)
    assert sorted(copy.inputs.values_list("index", "selector", "source__digest")) == [(0, SELECTOR, EXEC), (1, "", IMAGE)]
    assert copy.input_count == 2
    assert PendingExport.objects.filter(record__organization=org).count() == 3


def test_root_record_digest_is_the_key_id(client, org, token):
    keys, links = build()
    post_records(client, token, keys, links)
    assert Record.objects.filter(organization=org, digest=IMAGE, input_count=0).count() == 1


def test_two_engines_with_random_ids_land_on_the_same_records(client, org, token):
    first = post_records(client, token, *build())
    second = post_records(client, token, *build())
    assert Record.objects.filter(organization=org).count() == 3
    assert RecordInput.objects.filter(record__organization=org).count() == 3
    assert len(identities(first)) == 3
    # the same records, already asked for (and within the back-off)
    assert second.json()["ExportRecords"] == []


def test_same_operation_on_other_inputs_is_another_record(client, org, token):
    ids = [random_key_id(), random_key_id()]
    other_image = root_key(sha("docker-image://golang:1.22"))
    keys = [key(IMAGE), key(other_image), key(ids[0]), key(ids[1])]
    links = [link(ids[0], IMAGE, 0, EXEC), link(ids[1], other_image, 0, EXEC)]
    post_records(client, token, keys, links)
    assert Record.objects.filter(organization=org, digest=EXEC).count() == 2


def test_selector_and_output_index_make_different_records(client, org, token):
    ids = [random_key_id() for _ in range(3)]
    keys = [key(IMAGE)] + [key(i) for i in ids]
    links = [
        link(ids[0], IMAGE, 0, output_key(sha("exec"), 0)),
        link(ids[1], IMAGE, 0, output_key(sha("exec"), 1)),
        link(ids[2], IMAGE, 0, output_key(sha("exec"), 0), SELECTOR),
    ]
    post_records(client, token, keys, links)
    assert Record.objects.filter(organization=org).count() == 4


def test_alternatives_are_one_record(client, org, token):
    other_image = root_key(sha("other image"))
    k = random_key_id()
    keys = [key(IMAGE), key(other_image), key(k, result("r"))]
    links = [link(k, IMAGE, 0, EXEC), link(k, other_image, 0, EXEC, SELECTOR)]
    post_records(client, token, keys, links)
    record = Record.objects.get(organization=org, digest=EXEC)
    assert record.input_count == 1
    assert sorted(record.inputs.values_list("index", "selector")) == [(0, ""), (0, SELECTOR)]


def test_records_are_per_organization(client, org, token, other_org, other_token):
    keys, links = build(["a" * 25, "b" * 25])
    post_records(client, token, keys, links)
    response = post_records(client, other_token, keys, links)
    assert len(response.json()["ExportRecords"]) == 3
    assert Record.objects.filter(organization=other_org).count() == 3
    assert Record.objects.filter(organization=org).count() == 3


def test_unchanged_graph_again_writes_nothing(client, org, token, django_assert_max_num_queries):
    keys, links = build()
    post_records(client, token, keys, links)
    count = (Record.objects.count(), RecordInput.objects.count(), PendingExport.objects.count())
    with django_assert_max_num_queries(8):
        response = post_records(client, token, keys, links)
    assert response.status_code == 200
    assert response.json() == {"ExportRecords": []}
    assert (Record.objects.count(), RecordInput.objects.count(), PendingExport.objects.count()) == count


def test_record_with_a_complete_result_is_not_asked_for(client, org, token):
    keys, links = build()
    post_records(client, token, keys, links)
    exec_record = Record.objects.get(organization=org, digest=EXEC)
    Result.objects.create(record=exec_record, chain="sha256:" + "0" * 64, created_at=timezone.now())
    Record.objects.filter(pk=exec_record.pk).update(has_result=True)
    PendingExport.objects.all().delete()
    response = post_records(client, token, *build())
    assert exec_record.identity not in identities(response)
    assert len(response.json()["ExportRecords"]) == 2


def test_not_delivered_is_asked_again_after_the_back_off(client, org, token):
    keys, links = build()
    with override_settings(EXPORT_RETRY_AFTER=600):
        with time_machine.travel(timezone.now(), tick=False) as traveller:
            assert len(post_records(client, token, keys, links).json()["ExportRecords"]) == 3
            traveller.shift(timedelta(seconds=599))
            assert post_records(client, token, keys, links).json()["ExportRecords"] == []
            traveller.shift(timedelta(seconds=2))
            assert len(post_records(client, token, keys, links).json()["ExportRecords"]) == 3


def test_the_engine_asked_is_asked_again_at_once_when_blobs_arrived(client, org, token):
    """Its export is over (same ref ids: the same engine, whose exports are serial) and
    was pushing (a blob arrived): a push failed. Another engine still waits."""
    from blobs.models import Blob, BlobState

    keys, links = build()
    other_keys = [dict(k, Results=[dict(r, ID=r["ID"] + "-other") for r in k["Results"]]) for k in keys]
    with time_machine.travel(timezone.now(), tick=False) as traveller:
        assert len(post_records(client, token, keys, links).json()["ExportRecords"]) == 3
        traveller.shift(timedelta(seconds=60))
        # No blob arrived: maybe refs it skipped; nobody is asked again yet.
        assert post_records(client, token, keys, links).json()["ExportRecords"] == []
        Blob.objects.create(organization=org, digest=sha("a layer"), size=5, state=BlobState.VERIFIED,
                            verified_at=timezone.now())
        traveller.shift(timedelta(seconds=60))
        assert post_records(client, token, other_keys, links).json()["ExportRecords"] == []
        again = post_records(client, token, keys, links).json()["ExportRecords"]
        assert sorted(e["CacheRefID"] for e in again) == ["ref-copy", "ref-exec", "ref-image"]
        # Asked anew just now: the other engine still waits, and so does this one.
        traveller.shift(timedelta(seconds=60))
        assert post_records(client, token, other_keys, links).json()["ExportRecords"] == []
        assert post_records(client, token, keys, links).json()["ExportRecords"] == []


def test_an_export_an_outage_interrupted_is_asked_again_once_the_export_timeout_is_over(
    client, org, token, builtin
):
    """The engine's /layers failed with a 503 (or never came: the engine lost the service
    mid-export). No setting lengthens the wait: the record is asked for again, of any
    engine, as soon as that export must be over, and once delivered it is in /import."""
    from tests.buildkit_oracle import descriptor, get_import, post_layers, store_blob

    org.export_timeout = 300
    org.save(update_fields=["export_timeout"])
    keys, links = build()
    other_keys = [dict(k, Results=[dict(r, ID=r["ID"] + "-other") for r in k["Results"]]) for k in keys]
    with time_machine.travel(timezone.now(), tick=False) as traveller:
        assert len(post_records(client, token, keys, links).json()["ExportRecords"]) == 3
        traveller.shift(timedelta(seconds=299))
        # That export may still be running: nobody else is asked yet.
        assert post_records(client, token, other_keys, links).json()["ExportRecords"] == []
        traveller.shift(timedelta(seconds=2))
        again = post_records(client, token, other_keys, links).json()["ExportRecords"]
        assert sorted(e["CacheRefID"] for e in again) == ["ref-copy-other", "ref-exec-other", "ref-image-other"]
        for n, entry in enumerate(again):
            store_blob(org, sha(f"layer {n}"), 3)
        delivered = [{"RecordDigest": e["Digest"], "Layers": [descriptor(sha(f"layer {n}"), 3)]}
                     for n, e in enumerate(again)]
        assert sorted(post_layers(client, token, delivered).json()["Accepted"]) == sorted(e["Digest"] for e in again)
    imported = get_import(client, token)
    assert len([r for r in imported["records"] if "layers" in r]) == 3


def test_export_records_are_capped_newest_first(client, org, token):
    ids = [random_key_id() for _ in range(5)]
    keys = [key(IMAGE)]
    links = []
    for n, key_id in enumerate(ids):
        keys.append(key(key_id, result(f"ref{n}", created_at=f"2026-11-2{n}T10:00:00Z")))
        links.append(link(key_id, IMAGE, 0, output_key(sha(f"op {n}"))))
    with override_settings(EXPORT_RECORDS_MAX=2):
        first = post_records(client, token, keys, links).json()["ExportRecords"]
        second = post_records(client, token, keys, links).json()["ExportRecords"]
    assert [e["CacheRefID"] for e in first] == ["ref4", "ref3"]
    assert [e["CacheRefID"] for e in second] == ["ref2", "ref1"]


def test_newest_result_of_a_key_is_the_one_asked_for(client, token):
    keys = [
        key(IMAGE, result("old", "2026-01-01T00:00:00Z"), result("new", "2026-06-01T00:00:00+02:00"), result("mid", "2026-03-01T00:00:00Z"))
    ]
    assert [e["CacheRefID"] for e in post_records(client, token, keys, []).json()["ExportRecords"]] == ["new"]


def test_description_is_kept(client, org, token):
    keys = [key(IMAGE, result("r", description="pull docker.io/library/golang:1.23"))]
    post_records(client, token, keys, [])
    assert Record.objects.get(organization=org).description == "pull docker.io/library/golang:1.23"
    assert PendingExport.objects.get().description == "pull docker.io/library/golang:1.23"


def test_random_keys_are_never_exported(client, org, token):
    random_root = "random:" + "1" * 64
    ids = [random_key_id(), random_key_id()]
    keys = [key(random_root, result("r-random")), key(IMAGE), key(ids[0], result("r-only-random")), key(ids[1], result("r-alt"))]
    links = [
        link(ids[0], random_root, 0, EXEC),
        link(ids[1], random_root, 0, COPY),
        link(ids[1], IMAGE, 0, COPY),
    ]
    response = post_records(client, token, keys, links)
    assert {e["CacheRefID"] for e in response.json()["ExportRecords"]} == {"r-alt"}
    assert not Record.objects.filter(digest__startswith="random:").exists()
    copy = Record.objects.get(organization=org, digest=COPY)
    assert list(copy.inputs.values_list("source__digest", flat=True)) == [IMAGE]


def test_null_and_absent_lists_are_empty(client, org, token):
    for body in ({}, {"CacheKeys": None, "Links": None}, {"CacheKeys": [{"ID": IMAGE, "Results": None}]}):
        response = engine_request(client, "POST", "/magicache/records", token, body)
        assert response.status_code == 200, response.content
        assert response.json() == {"ExportRecords": []}


def test_empty_body_is_an_empty_payload(client, token):
    response = engine_request(client, "POST", "/magicache/records", token, raw=b"")
    assert response.status_code == 200
    assert response.json() == {"ExportRecords": []}


@pytest.mark.parametrize(
    "raw",
    [
        b"{not json",
        b"[]",
        b'"text"',
        b'{"CacheKeys": {}}',
        b'{"CacheKeys": [1]}',
        b'{"CacheKeys": [{"Results": []}]}',
        b'{"CacheKeys": [{"ID": 7}]}',
        b'{"CacheKeys": [{"ID": ""}]}',
        b'{"CacheKeys": [{"ID": "k", "Results": "no"}]}',
        b'{"CacheKeys": [{"ID": "k", "Results": [{"CreatedAt": "2026-01-01T00:00:00Z"}]}]}',
        b'{"CacheKeys": [{"ID": "k", "Results": [{"ID": "r", "CreatedAt": "yesterday"}]}]}',
        b'{"CacheKeys": [{"ID": "k", "Results": [{"ID": "r", "CreatedAt": "2026-01-01T00:00:00"}]}]}',
        b'{"CacheKeys": [{"ID": "k", "Results": [{"ID": "r", "Description": 3}]}]}',
        b'{"Links": [{"ID": "k"}]}',
        b'{"Links": [{"ID": "k", "LinkedID": "j", "Input": "0", "Digest": "sha256:x"}]}',
        b'{"Links": [{"ID": "k", "LinkedID": "j", "Input": true, "Digest": "sha256:x"}]}',
        b'{"Links": [{"ID": "k", "LinkedID": "j", "Input": 0, "Digest": 5}]}',
        b'{"Links": "none"}',
        b'{"CacheKeys": [{"ID": "k\\u0000"}]}',
        b'{"CacheKeys": [{"ID": "k", "Results": [{"ID": "r\\u0000a"}]}]}',
        b'{"Links": [{"ID": "k", "LinkedID": "j\\u0000", "Input": 0, "Digest": "sha256:x"}]}',
        b'{"Links": [{"ID": "k", "LinkedID": "j", "Input": 0, "Digest": "sha256:x", "Selector": false}]}',
        b'{"Links": [{"ID": "k", "LinkedID": "j", "Input": 0, "Digest": "sha256:x", "Selector": 0}]}',
    ],
)
def test_structural_errors_are_400_and_change_nothing(client, org, token, raw):
    response = engine_request(client, "POST", "/magicache/records", token, raw=raw)
    assert response.status_code == 400, response.content
    assert isinstance(response.json()["error"], str)
    assert not Record.objects.exists()
    assert not PendingExport.objects.exists()


def test_read_only_token_stores_nothing(client, org, ro_token):
    response = post_records(client, ro_token, *build())
    assert response.status_code == 200
    assert response.json() == {"ExportRecords": []}
    assert not Record.objects.exists()


def test_too_large_body_is_413(client, token):
    keys, links = build()
    with override_settings(MAX_ENGINE_BODY=1024):
        response = post_records(client, token, keys * 20, links)
    assert response.status_code == 413
    assert "error" in response.json()
    assert not Record.objects.exists()


def test_bodies_above_djangos_default_limits_are_read(client, org, token):
    """Django refuses request.body above 2.5 MB by default; export bodies are far larger."""
    ids = [random_key_id() for _ in range(12_000)]
    keys = [key(IMAGE)] + [key(i, result(f"ref-{i}", description="x" * 100)) for i in ids]
    links = [link(i, IMAGE, 0, output_key(sha(f"op {n}"))) for n, i in enumerate(ids)]
    response = post_records(client, token, keys, links)
    assert response.status_code == 200, response.content[:200]
    assert Record.objects.filter(organization=org).count() == 12_001


class TestGraphDefects:
    """Each defect drops the key and what depends on it, keeps the rest, and is logged."""

    def post(self, client, token, extra_keys, extra_links, caplog):
        keys, links = build(["good0000000000000000000000", "good1111111111111111111111"])
        with caplog.at_level(logging.WARNING, logger="cacheweb.records"):
            response = post_records(client, token, keys + extra_keys, links + extra_links)
        assert response.status_code == 200, response.content
        return response

    def assert_kept_good(self, org, response, extra_refs=()):
        assert {e["CacheRefID"] for e in response.json()["ExportRecords"]} == {"ref-image", "ref-exec", "ref-copy", *extra_refs}
        assert set(Record.objects.filter(organization=org).values_list("digest", flat=True)) >= {IMAGE, EXEC, COPY}

    def test_dangling_link(self, client, org, token, caplog):
        bad, child = random_key_id(), random_key_id()
        response = self.post(
            client,
            token,
            [key(bad, result("bad")), key(child, result("child"))],
            [link(bad, "not-in-payload", 0, sha("x")), link(child, bad, 0, sha("y"))],
            caplog,
        )
        self.assert_kept_good(org, response)
        assert Record.objects.filter(organization=org).count() == 3
        assert "link to a key not in the payload=1" in caplog.text
        assert "depends on a defective key=1" in caplog.text

    def test_loop(self, client, org, token, caplog):
        a, b, c = random_key_id(), random_key_id(), random_key_id()
        response = self.post(
            client,
            token,
            [key(a, result("a")), key(b, result("b")), key(c, result("c"))],
            [link(a, b, 0, sha("a")), link(b, a, 0, sha("b")), link(a, IMAGE, 1, sha("a")), link(c, b, 0, sha("c"))],
            caplog,
        )
        self.assert_kept_good(org, response)
        assert Record.objects.filter(organization=org).count() == 3
        assert "loop=3" in caplog.text

    def test_self_loop(self, client, org, token, caplog):
        a = random_key_id()
        response = self.post(client, token, [key(a, result("a"))], [link(a, a, 0, sha("a"))], caplog)
        self.assert_kept_good(org, response)
        assert "loop=1" in caplog.text

    def test_disagreeing_digests(self, client, org, token, caplog):
        a = random_key_id()
        response = self.post(
            client, token, [key(a, result("a"))], [link(a, IMAGE, 0, sha("one")), link(a, IMAGE, 1, sha("two"))], caplog
        )
        self.assert_kept_good(org, response)
        assert "links disagree on digest=1" in caplog.text

    @pytest.mark.parametrize("bad", ["sha256:abc", "md5:" + "0" * 32, "SHA256:" + "A" * 64, ""])
    def test_invalid_link_digest(self, client, org, token, caplog, bad):
        a = random_key_id()
        response = self.post(client, token, [key(a, result("a"))], [link(a, IMAGE, 0, bad)], caplog)
        self.assert_kept_good(org, response)
        assert "invalid digest=1" in caplog.text

    def test_invalid_root_id(self, client, org, token, caplog):
        a = random_key_id()
        response = self.post(client, token, [key("not-a-digest", result("root")), key(a, result("a"))], [link(a, "not-a-digest", 0, sha("a"))], caplog)
        self.assert_kept_good(org, response)
        assert "invalid digest=1" in caplog.text
        assert "depends on a defective key=1" in caplog.text

    def test_invalid_selector_and_input_gap(self, client, org, token, caplog):
        a, b = random_key_id(), random_key_id()
        response = self.post(
            client,
            token,
            [key(a, result("a")), key(b, result("b"))],
            [link(a, IMAGE, 0, sha("a"), "selector"), link(b, IMAGE, 0, sha("b")), link(b, IMAGE, 2, sha("b"))],
            caplog,
        )
        self.assert_kept_good(org, response)
        assert "invalid selector=1" in caplog.text
        assert "input indexes not 0..n-1=1" in caplog.text

    def test_link_from_an_unknown_key_is_ignored(self, client, org, token, caplog):
        response = self.post(client, token, [], [link("not-a-key", IMAGE, 0, sha("z"))], caplog)
        self.assert_kept_good(org, response)
        assert Record.objects.filter(organization=org).count() == 3


def test_overlong_ref_id_is_400(client, token):
    response = post_records(client, token, [key(IMAGE, result("r" * 256))], [])
    assert response.status_code == 400
    assert not Record.objects.exists()


def test_nul_in_a_description_is_dropped_not_stored(client, org, token):
    digest = sha("exec with a nul")
    response = post_records(client, token, [key(root_key(digest), result("r", description="make\u0000 all"))], [])
    assert response.status_code == 200
    assert Record.objects.get().description == "make all"
