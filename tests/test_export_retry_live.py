"""A failed export is asked for again soon, of one engine at a time.

The engine calls /layers only when every push of its export succeeded. Here one PUT of
an export fails through gunicorn; the record must not wait an hour, yet must not be
handed to a second engine while the first may still be exporting it."""

import gzip
import hashlib
import json
import os
from datetime import timedelta

import pytest
import requests
import time_machine
from django.utils import timezone

from records.models import PendingExport, Result
from tests.buildkit_oracle import descriptor, key, post_records, result, root_key, sha
from tests.support import basic, chunked_request

pytestmark = pytest.mark.django_db(transaction=True)

GRAPH = ([key(root_key(sha("docker-image://alpine")), result("ref-1", description="pull alpine"))], [])


def call(service, token, method, path, body):
    raw = json.dumps(body).encode() + b"\n"
    status, headers, reply = chunked_request(
        service.url, method, path,
        {"Authorization": basic(token), "Content-Type": "application/json", "Accept-Encoding": "gzip"},
        [raw[:1], raw[1:]],
    )
    if headers.get("content-encoding") == "gzip":
        reply = gzip.decompress(reply)
    return status, json.loads(reply)


def blob(data):
    return "sha256:" + hashlib.sha256(data).hexdigest(), data


def upload(service, token, digest, data):
    status, answer = call(service, token, "GET", "/magicache/layerUploadURL", {"Digest": digest})
    assert status == 200, answer
    if answer["Skip"]:
        return "skip"
    return requests.put(answer["URL"], data=data, headers=answer["Headers"], timeout=30).status_code


def test_a_failed_put_is_asked_again_after_the_export_timeout(live_service, client, org, token, other_token):
    from accounts.models import EngineToken

    second_engine = EngineToken.issue(org, label="second engine")[1]
    base = blob(os.urandom(5000))
    top = blob(os.urandom(7000))

    # First export, engine A: asked, pushes the base layer, then a PUT fails.
    status, reply = call(live_service, token, "POST", "/magicache/records", {"CacheKeys": GRAPH[0], "Links": None})
    assert status == 200, reply
    [asked] = reply["ExportRecords"]
    assert upload(live_service, token, *base) == 200
    assert upload(live_service, token, top[0], top[1][:-1] + b"!") == 400  # wrong bytes: refused
    # ... so the engine never calls /layers.
    asked_at = PendingExport.objects.get().asked_at

    with time_machine.travel(asked_at, tick=False) as clock:
        # While engine A may still be in its export, nobody else is asked for it.
        clock.shift(timedelta(seconds=org.export_timeout - 1))
        assert post_records(client, second_engine, *GRAPH).json()["ExportRecords"] == []
        # Once the export timeout has passed, that export is over: engine A's next
        # export is asked again (not an hour later).
        clock.shift(timedelta(seconds=2))
        again = post_records(client, token, *GRAPH).json()["ExportRecords"]
        assert again == [asked]
        # ... and, being asked of A, not of B at the same time.
        assert post_records(client, second_engine, *GRAPH).json()["ExportRecords"] == []

    # Engine A's second export: the base layer arrived the first time, the top one now.
    assert upload(live_service, token, *base) == "skip"
    assert upload(live_service, token, *top) == 200
    layers = [descriptor(base[0], len(base[1])), descriptor(top[0], len(top[1]))]
    status, _ = call(live_service, token, "POST", "/magicache/layers",
                     {"UpdatedRecords": [{"RecordDigest": asked["Digest"], "Layers": layers}]})
    assert status == 200
    assert Result.objects.filter(record__organization=org).count() == 1

    # A second engine now hits: its import has the record with the whole chain.
    status, config = call(live_service, second_engine, "GET", "/magicache/import", {})
    assert status == 200
    [record] = config["records"]
    assert record["digest"] == GRAPH[0][0]["ID"]  # a root record: its key's digest
    assert [layer["blob"] for layer in config["layers"]] == [base[0], top[0]]
    assert requests.get(
        call(live_service, second_engine, "GET", "/magicache/layerDownloadURL", {"Digest": top[0]})[1]["URL"],
        timeout=30,
    ).content == top[1]
