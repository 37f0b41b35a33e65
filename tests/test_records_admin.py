"""Admin pages for records, results and layers: search, filter, inputs, layer chain."""

import pytest
from django.urls import reverse

from records.models import Layer, Record, Result
from tests.buildkit_oracle import descriptor, key, link, output_key, post_layers, post_records, random_key_id, result, root_key, sha, store_blob

IMAGE = root_key(sha("docker-image://golang:1.23"))


@pytest.fixture
def graph(client, org, token):
    k = random_key_id()
    keys = [key(IMAGE, result("img", description="pull docker.io/library/golang:1.23")), key(k, result("ex", description="exec go build ./..."))]
    asked = post_records(client, token, keys, [link(k, IMAGE, 0, output_key(sha("exec")), sha("sel"))]).json()["ExportRecords"]
    updated = []
    for n, entry in enumerate(asked):
        names = [sha("base"), sha(f"top {n}")]
        for name in names:
            store_blob(org, name, 10)
        updated.append({"RecordDigest": entry["Digest"], "Layers": [descriptor(d, 10) for d in names]})
    assert post_layers(client, token, updated).json()["Refused"] == []


def test_record_search_by_description_and_digest(admin_client, graph):
    url = reverse("admin:records_record_changelist")
    page = admin_client.get(url, {"q": "go build"})
    assert page.status_code == 200
    assert b"exec go build ./..." in page.content and b"pull docker.io" not in page.content
    page = admin_client.get(url, {"q": IMAGE})
    assert b"pull docker.io/library/golang:1.23" in page.content
    # Identities are stored as bytes; the search still matches a part of their text.
    made = Record.objects.get(description="exec go build ./...")
    page = admin_client.get(url, {"q": made.identity[20:40].upper()})
    assert b"exec go build ./..." in page.content and b"pull docker.io" not in page.content
    assert made.identity[:19].encode() in page.content
    page = admin_client.get(reverse("admin:records_result_changelist"), {"q": made.identity})
    assert page.status_code == 200 and b"exec go build ./..." in page.content


def test_record_filter_by_organization(admin_client, graph, org, other_org):
    url = reverse("admin:records_record_changelist")
    assert b"exec go build" in admin_client.get(url, {"organization__id__exact": org.pk}).content
    assert b"exec go build" not in admin_client.get(url, {"organization__id__exact": other_org.pk}).content


def test_record_page_shows_inputs_and_results(admin_client, graph):
    record = Record.objects.get(description="exec go build ./...")
    page = admin_client.get(reverse("admin:records_record_change", args=[record.pk]))
    assert page.status_code == 200
    assert sha("sel").encode() in page.content  # the input's selector
    assert b"exec go build ./..." in page.content
    content = page.content.decode()
    top = record.results.get().chain_layers.get(position=1).layer.digest
    assert content.index(sha("base")) < content.index(top)  # the layer chain, base first


def test_result_page_shows_the_layer_chain(admin_client, graph):
    res = Result.objects.get(description="exec go build ./...")
    page = admin_client.get(reverse("admin:records_result_change", args=[res.pk]))
    assert page.status_code == 200
    content = page.content.decode()
    content = content[content.lower().index("layer chain (base first)") :]
    top = res.chain_layers.get(position=1).layer.digest
    assert content.index(sha("base")) < content.index(top)  # base layer first
    assert admin_client.get(reverse("admin:records_result_changelist"), {"q": "go build"}).status_code == 200


def test_layer_search(admin_client, graph):
    page = admin_client.get(reverse("admin:records_layer_changelist"), {"q": sha("base")})
    assert page.status_code == 200
    assert sha("base").encode() in page.content
    layer = Layer.objects.get(digest=sha("base"))
    assert admin_client.get(reverse("admin:records_layer_change", args=[layer.pk])).status_code == 200
