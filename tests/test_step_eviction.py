"""Evicting build steps (one, or every step a search matches) and the admin's delete paths."""

from pathlib import Path

import pytest
from django.urls import reverse

from blobs.models import Blob
from blobs.storage import StoreUnavailable, get_store
from mounts.models import CacheMount
from records import eviction
from records.models import Layer, PendingExport, Record, Result
from tests.buildkit_oracle import get_import
from tests.cache_rows import a_snapshot
from tests.step_graph import BUILD, export_graph, layer_digest, size

pytestmark = pytest.mark.usefixtures("builtin")


@pytest.fixture
def graph(client, org, token):
    return export_graph(client, org, token)


def login(client, operators, who="maintainer"):
    client.force_login(operators[who])
    return client


def imported_tops(client, token):
    """The own-layer digests of the steps an engine importing now would find."""
    config = get_import(client, token)
    return {config["layers"][r["layers"][0]["layer"]]["blob"] for r in config["records"] if r.get("layers")}


def stored(org, name):
    digest = layer_digest(name)
    return Blob.objects.filter(organization=org, digest=digest).exists(), Path(get_store().path(org.pk, digest)).exists()


def asked_again(client, org, token, name):
    """Whether an engine reporting the graph now is asked to export step `name`."""
    before = set(PendingExport.objects.values_list("record_id", flat=True))
    export_graph(client, org, token, names=[])
    return Record.objects.get(pk=graph_record(org, name)).pk in (
        set(PendingExport.objects.values_list("record_id", flat=True)) - before
    )


def graph_record(org, name):
    from tests.step_graph import STEPS

    description = STEPS[name][0]
    rows = Record.objects.filter(organization=org, description=description)
    if name.startswith("build"):
        source = "mod" if name == "build-a" else "src"
        rows = rows.filter(inputs__source__description=STEPS[source][0])
    return rows.get().pk


# ---- one step -------------------------------------------------------------------------------


def test_confirmation_says_what_goes_and_the_bytes_freed(client, operators, graph):
    page = login(client, operators).get(f"/orgs/acme/cache/steps/{graph.records['build-a'].pk}/evict")
    assert page.status_code == 200
    html = page.content.decode()
    assert BUILD in html and graph.records["build-a"].digest in html
    assert f"({size('build-a'):,} bytes) freed" in html
    assert "1 layer blob that no other step uses is deleted" in html
    assert "2 layers shared with other steps stay" in html
    assert layer_digest("build-a") in html and layer_digest("mod") not in html


def test_evicting_a_step(client, operators, org, token, graph):
    build_a, mod = graph.records["build-a"], graph.records["mod"]
    assert layer_digest("build-a") in imported_tops(client, token)
    page = login(client, operators).post(f"/orgs/acme/cache/steps/{build_a.pk}/evict")
    assert page.status_code == 302
    messages = [str(m) for m in page.wsgi_request._messages]
    assert any("1 layer blob" in m and "Evicted step" in m for m in messages), messages
    # Leaves /import at once; its own layer's bytes are gone; shared layers stay.
    tops = imported_tops(client, token)
    assert layer_digest("build-a") not in tops and {layer_digest(n) for n in ("image", "mod", "src", "build-b")} <= tops
    assert stored(org, "build-a") == (False, False)
    assert stored(org, "mod") == (True, True) and stored(org, "image") == (True, True)
    assert not Layer.objects.filter(organization=org, digest=layer_digest("build-a")).exists()
    assert not Result.objects.filter(record=build_a).exists()
    build_a.refresh_from_db()
    assert not build_a.has_result
    # Gone from the list; the next engine reporting it is asked to export it again.
    assert f'data-step="{build_a.pk}"'.encode() not in client.get("/orgs/acme/cache/steps/").content
    assert asked_again(client, org, token, "build-a")
    assert Result.objects.filter(record=mod).exists()


def test_dependants_of_an_evicted_step_keep_their_results(client, operators, org, token, graph):
    login(client, operators).post(f"/orgs/acme/cache/steps/{graph.records['mod'].pk}/evict")
    tops = imported_tops(client, token)
    assert layer_digest("mod") not in tops
    assert layer_digest("build-a") in tops  # its dependant still hits
    # mod's layer is in build-a's chain: it stays.
    assert stored(org, "mod") == (True, True)
    assert Result.objects.filter(record=graph.records["build-a"], complete=True).exists()


def test_a_layer_a_mount_snapshot_holds_is_kept(client, operators, org, graph):
    mount = CacheMount.objects.create(organization=org, name="same-bytes")
    a_snapshot(mount, layer_digest("build-b"), size("build-b"))
    plan = eviction.plan_steps(org, [graph.records["build-b"].pk])
    assert plan.blobs == {} and plan.mount_held == 1
    login(client, operators).post(f"/orgs/acme/cache/steps/{graph.records['build-b'].pk}/evict")
    assert stored(org, "build-b") == (True, True)
    assert not Result.objects.filter(record=graph.records["build-b"]).exists()


def test_store_failure_keeps_the_blobs_for_the_next_pass(client, operators, org, token, graph, monkeypatch):
    def refuse(self, org_id, digest):
        raise StoreUnavailable("s3 down")

    monkeypatch.setattr(type(get_store()), "delete", refuse)
    page = login(client, operators).post(f"/orgs/acme/cache/steps/{graph.records['build-a'].pk}/evict", follow=True)
    assert b"did not answer for 1 blob" in page.content
    assert layer_digest("build-a") not in imported_tops(client, token)
    # The row stays with its bytes, unreferenced: the storage lifecycle deletes it later.
    assert stored(org, "build-a") == (True, True)
    assert not Layer.objects.filter(digest=layer_digest("build-a")).exists()


def test_evicting_a_record_without_results_is_404(client, operators, org, token):
    export_graph(client, org, token, names=["image"])
    bare = Record.objects.exclude(has_result=True).first()
    assert login(client, operators).post(f"/orgs/acme/cache/steps/{bare.pk}/evict").status_code == 404


# ---- every step a search matches ---------------------------------------------------------------


def test_bulk_eviction_preview_lists_exactly_what_goes(client, operators, org, graph):
    page = login(client, operators).get("/orgs/acme/cache/steps/evict", {"q": "go build"})
    assert page.status_code == 200
    html = page.content.decode()
    assert "Evict 2 steps" in html
    for name in ("build-a", "build-b"):
        assert f'data-step="{graph.records[name].pk}"' in html
    assert f'data-step="{graph.records["mod"].pk}"' not in html
    freed = size("build-a") + size("build-b")
    assert f"({freed:,} bytes) freed" in html
    assert '<input type="hidden" name="q" value="go build">' in html
    assert '<input type="hidden" name="expected" value="2">' in html


def test_bulk_eviction_evicts_every_match(client, operators, org, token, graph):
    page = login(client, operators).post("/orgs/acme/cache/steps/evict", {"q": "go build", "expected": "2"})
    assert page.status_code == 302
    tops = imported_tops(client, token)
    assert tops == {layer_digest(n) for n in ("image", "mod", "src")}
    assert stored(org, "build-a") == (False, False) and stored(org, "build-b") == (False, False)
    assert stored(org, "src") == (True, True)
    assert Record.objects.filter(has_result=True).count() == 3


def test_bulk_eviction_refuses_when_the_matches_changed(client, operators, org, graph):
    page = login(client, operators).post("/orgs/acme/cache/steps/evict", {"q": "go build", "expected": "3"}, follow=True)
    assert b"now matches 2 steps, not the number you confirmed" in page.content
    assert Result.objects.count() == 5


@pytest.mark.parametrize("expected", ["", "two", "²", "-2", "1" * 5000])
def test_bulk_eviction_refuses_a_confirmation_that_is_not_a_count(client, operators, graph, expected):
    page = login(client, operators).post("/orgs/acme/cache/steps/evict", {"q": "go build", "expected": expected}, follow=True)
    assert page.status_code == 200
    assert b"now matches 2 steps, not the number you confirmed" in page.content
    assert Result.objects.count() == 5


def test_bulk_eviction_needs_a_search(client, operators, graph):
    for method in ("get", "post"):
        page = getattr(login(client, operators), method)("/orgs/acme/cache/steps/evict", follow=True)
        assert b"evicting every step takes a search" in page.content
    assert Result.objects.count() == 5


def test_bulk_eviction_with_bad_parameters_changes_nothing(client, operators, graph):
    page = login(client, operators).post("/orgs/acme/cache/steps/evict", {"sort": "nope", "q": "go", "expected": "2"}, follow=True)
    assert b"Nothing was evicted: sort:" in page.content
    assert Result.objects.count() == 5


def test_bulk_eviction_by_layer_from_a_blob(client, operators, org, graph):
    login(client, operators).post("/orgs/acme/cache/steps/evict", {"layer": layer_digest("mod"), "expected": "2"})
    assert set(Record.objects.filter(has_result=True).values_list("pk", flat=True)) == {
        graph.records[n].pk for n in ("image", "src", "build-b")
    }
    assert stored(org, "mod") == (False, False)


# ---- the blob eviction page names the steps -------------------------------------------------------


def test_blob_eviction_names_its_steps(client, operators, graph):
    html = login(client, operators).get(f"/orgs/acme/cache/blobs/{layer_digest('mod')}/evict").content.decode()
    section = html[html.index('id="blob-steps"') :]
    for name in ("mod", "build-a"):
        assert f'data-step="{graph.records[name].pk}"' in section
    assert f'data-step="{graph.records["src"].pk}"' not in section
    assert "the 2 steps below" in html


# ---- who may ---------------------------------------------------------------------------------


def urls(graph, layer_pk):
    step = graph.records["build-a"].pk
    return {
        "read": [
            "/orgs/acme/cache/steps/",
            f"/orgs/acme/cache/steps/{step}/",
            f"/orgs/acme/cache/layers/{layer_pk}/",
            "/orgs/acme/cache/",
        ],
        "evict": [f"/orgs/acme/cache/steps/{step}/evict", "/orgs/acme/cache/steps/evict?q=go"],
    }


def test_outsider_viewer_maintainer_on_every_url(client, operators, org, graph):
    layer = Layer.objects.get(organization=org, digest=layer_digest("build-a"))
    pages = urls(graph, layer.pk)
    client.force_login(operators["outsider"])
    for url in pages["read"] + pages["evict"]:
        assert client.get(url).status_code == 404, url
        assert client.post(url, {"expected": "1"}).status_code == 404, url
    client.force_login(operators["viewer"])
    for url in pages["read"]:
        assert client.get(url).status_code == 200, url
    for url in pages["evict"]:
        assert client.get(url).status_code == 403, url
        assert client.post(url, {"expected": "1"}).status_code == 403, url
    html = client.get(f"/orgs/acme/cache/steps/{graph.records['build-a'].pk}/").content
    assert b"Evict this step" not in html
    assert b'id="evict-matching"' not in client.get("/orgs/acme/cache/steps/?q=go").content
    client.force_login(operators["maintainer"])
    for url in pages["read"] + pages["evict"]:
        assert client.get(url).status_code == 200, url
    assert b'id="evict-matching"' in client.get("/orgs/acme/cache/steps/?q=go").content
    assert Result.objects.count() == 5
    client.logout()
    for url in pages["read"] + pages["evict"]:
        assert client.get(url).status_code == 302, url  # to the login page


# ---- Django admin -------------------------------------------------------------------------------


def test_admin_deleting_a_result_evicts_it_with_its_bytes(admin_client, client, org, token, graph):
    result = Result.objects.get(record=graph.records["build-b"])
    page = admin_client.post(reverse("admin:records_result_delete", args=[result.pk]), {"post": "yes"})
    assert page.status_code == 302
    assert not Result.objects.filter(pk=result.pk).exists()
    assert stored(org, "build-b") == (False, False)
    assert stored(org, "src") == (True, True)
    assert layer_digest("build-b") not in imported_tops(client, token)
    assert asked_again(client, org, token, "build-b")


def test_admin_bulk_deleting_results_evicts_them(admin_client, org, graph):
    chosen = Result.objects.filter(record__description=BUILD)
    page = admin_client.post(
        reverse("admin:records_result_changelist"),
        {"action": "delete_selected", "_selected_action": [r.pk for r in chosen], "post": "yes"},
    )
    assert page.status_code == 302
    assert stored(org, "build-a") == (False, False) and stored(org, "build-b") == (False, False)


def test_admin_deleting_a_blob_deletes_its_bytes(admin_client, org, graph):
    blob = Blob.objects.get(organization=org, digest=layer_digest("build-a"))
    page = admin_client.post(reverse("admin:blobs_blob_delete", args=[blob.pk]), {"post": "yes"})
    assert page.status_code == 302
    assert stored(org, "build-a") == (False, False)
    assert not Record.objects.get(pk=graph.records["build-a"].pk).has_result


@pytest.mark.parametrize("model", ["records_record", "records_result", "records_layer", "blobs_blob", "records_importsnapshot", "records_pendingexport", "accounts_engine"])
def test_admin_has_no_add_for_rows_engines_create(admin_client, model, graph):
    assert admin_client.get(reverse(f"admin:{model}_add")).status_code == 403
    assert f'href="{reverse(f"admin:{model}_add")}"'.encode() not in admin_client.get(reverse(f"admin:{model}_changelist")).content


def test_admin_shows_engine_fields_read_only_and_sizes_readable(admin_client, org, graph):
    blob = Blob.objects.get(organization=org, digest=layer_digest("image"))
    html = admin_client.get(reverse("admin:blobs_blob_change", args=[blob.pk])).content.decode()
    assert 'name="digest"' not in html and 'name="size"' not in html and 'name="state"' not in html
    assert f"({blob.size:,} bytes)" in html
    record = graph.records["build-a"]
    html = admin_client.get(reverse("admin:records_record_change", args=[record.pk])).content.decode()
    assert 'name="description"' not in html and BUILD in html
    result = Result.objects.get(record=record)
    html = admin_client.get(reverse("admin:records_result_change", args=[result.pk])).content.decode()
    assert 'name="complete"' not in html
    layer = Layer.objects.get(digest=layer_digest("image"))
    assert admin_client.get(reverse("admin:records_layer_delete", args=[layer.pk])).status_code == 403
    assert admin_client.get(reverse("admin:records_record_delete", args=[record.pk])).status_code == 403
