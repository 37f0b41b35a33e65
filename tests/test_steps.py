"""The build steps pages: listing, search, filters, sorting, a step's page and a layer's contents."""

import re
from datetime import timedelta
from urllib.parse import quote

import pytest
from django.utils import timezone

from blobs.services import flush_uses, record_use
from records import layer_contents, steps
from records.models import Layer, LayerContents, Result
from tests.step_graph import BUILD, COPY_MOD, PULL, chain, export_graph, layer_digest, size

pytestmark = pytest.mark.usefixtures("builtin")


@pytest.fixture
def graph(client, org, token):
    return export_graph(client, org, token)


def login(client, operators, who="viewer"):
    client.force_login(operators[who])
    return client


def listed(response):
    """The record ids of the step rows on a steps page, in order."""
    return [int(n) for n in re.findall(r'<tr data-step="(\d+)"', response.content.decode())]


def ids(graph, *names):
    return [graph.records[n].pk for n in names]


def chain_bytes(name):
    return sum(size(part) for part in chain(name))


# ---- the listing -------------------------------------------------------------------------


def test_one_row_per_step_with_sizes_layers_engine_and_dependants(client, operators, org, graph):
    page = login(client, operators).get("/orgs/acme/cache/steps/")
    assert page.status_code == 200
    assert sorted(listed(page)) == sorted(r.pk for r in graph.records.values())
    rows = {s.record_id: s for s in steps.describe_steps(org, steps.step_listing(org))}
    image, build_a = rows[graph.records["image"].pk], rows[graph.records["build-a"].pk]
    assert (image.size, image.chain_size, image.layer_count) == (size("image"), size("image"), 1)
    assert (build_a.size, build_a.chain_size, build_a.layer_count) == (size("build-a"), chain_bytes("build-a"), 3)
    assert image.engine.engine_id == "ci-builder-1"
    # The image is the input of both copies; each copy of one build; the builds of none.
    assert [rows[graph.records[n].pk].dependants for n in ("image", "mod", "src", "build-a", "build-b")] == [2, 1, 1, 0, 0]
    assert rows[graph.records["build-a"].pk].same_description == 2
    assert image.same_description == 1
    html = page.content.decode()
    assert html.count(f"?description={quote(BUILD)}") == 2
    assert "means an engine was handed a download URL" in html


def test_records_without_a_result_are_not_steps(client, org, token, operators):
    graph = export_graph(client, org, token, names=["image", "mod"])
    assert sorted(r.record_id for r in steps.step_listing(org)) == sorted(ids(graph, "image", "mod"))
    # ...but their pages exist, to walk the graph through them.
    page = login(client, operators).get(f"/orgs/acme/cache/steps/{graph.records['build-a'].pk}/")
    assert page.status_code == 200 and b"no complete result of it is cached" in page.content


def test_search_by_description_is_a_case_insensitive_substring(client, operators, graph):
    login(client, operators)
    assert sorted(listed(client.get("/orgs/acme/cache/steps/", {"q": "GO BUILD"}))) == sorted(ids(graph, "build-a", "build-b"))
    assert listed(client.get("/orgs/acme/cache/steps/", {"q": "golang:1.22"})) == ids(graph, "image")
    assert listed(client.get("/orgs/acme/cache/steps/", {"q": "no such step"})) == []


def test_exact_description_shows_steps_that_share_it(client, operators, graph):
    page = login(client, operators).get("/orgs/acme/cache/steps/", {"description": BUILD})
    assert sorted(listed(page)) == sorted(ids(graph, "build-a", "build-b"))
    assert listed(client.get("/orgs/acme/cache/steps/", {"description": "exec go build"})) == []


def test_search_by_digest_prefix_with_or_without_scheme(client, operators, graph):
    login(client, operators)
    record = graph.records["mod"]
    for prefix in (record.digest[:20], record.digest[7:20].upper(), record.identity[:16]):
        assert listed(client.get("/orgs/acme/cache/steps/", {"digest": prefix})) == [record.pk], prefix


def test_filter_by_engine(client, operators, org, token, graph):
    other = export_graph(client, org, token, engine_id="laptop-2")  # exports nothing new: all cached
    assert other.engine.pk != graph.engine.pk
    login(client, operators)
    assert len(listed(client.get("/orgs/acme/cache/steps/", {"engine": graph.engine.pk}))) == 5
    assert listed(client.get("/orgs/acme/cache/steps/", {"engine": other.engine.pk})) == []
    page = client.get("/orgs/acme/cache/steps/")
    assert b'<option value="%d">ci-builder-1</option>' % graph.engine.pk in page.content


def test_filter_by_age(client, operators, graph):
    now = timezone.now()
    Result.objects.filter(record=graph.records["image"]).update(exported_at=now - timedelta(days=40))
    Result.objects.filter(record=graph.records["mod"]).update(exported_at=now - timedelta(days=10))
    login(client, operators)
    assert sorted(listed(client.get("/orgs/acme/cache/steps/", {"min_age_days": 30}))) == sorted(ids(graph, "image"))
    assert sorted(listed(client.get("/orgs/acme/cache/steps/", {"min_age_days": 7}))) == sorted(ids(graph, "image", "mod"))
    assert sorted(listed(client.get("/orgs/acme/cache/steps/", {"max_age_days": 7}))) == sorted(ids(graph, "src", "build-a", "build-b"))
    assert listed(client.get("/orgs/acme/cache/steps/", {"min_age_days": 7, "max_age_days": 30})) == ids(graph, "mod")


def use(org, name, when=None):
    """An engine is handed a download URL for the step's own layer."""
    record_use(org, layer_digest(name), when or timezone.now())
    flush_uses()


def test_filter_by_use_counts_downloads_of_the_steps_own_layer(client, operators, org, graph, fresh_use_counts):
    # The image's layer is every step's base: its downloads make the image used, not the builds.
    use(org, "image")
    use(org, "build-b", timezone.now() - timedelta(hours=1))
    login(client, operators)
    assert listed(client.get("/orgs/acme/cache/steps/", {"used": "yes", "sort": "-last_used"})) == ids(graph, "image", "build-b")
    assert sorted(listed(client.get("/orgs/acme/cache/steps/", {"used": "no"}))) == sorted(ids(graph, "mod", "src", "build-a"))


def test_filter_by_layer_lists_the_steps_whose_chain_has_it(client, operators, graph):
    login(client, operators)
    page = client.get("/orgs/acme/cache/steps/", {"layer": layer_digest("mod")})
    assert sorted(listed(page)) == sorted(ids(graph, "mod", "build-a"))
    assert len(listed(client.get("/orgs/acme/cache/steps/", {"layer": layer_digest("image")}))) == 5


def test_sorts(client, operators, graph):
    login(client, operators)
    by_own = sorted(graph.records, key=lambda n: -size(n))
    assert listed(client.get("/orgs/acme/cache/steps/", {"sort": "-size"})) == ids(graph, *by_own)
    assert listed(client.get("/orgs/acme/cache/steps/", {"sort": "size"})) == ids(graph, *reversed(by_own))
    by_chain = sorted(graph.records, key=lambda n: -chain_bytes(n))
    assert listed(client.get("/orgs/acme/cache/steps/", {"sort": "-total_size"})) == ids(graph, *by_chain)
    now = timezone.now()
    for age, name in enumerate(["build-b", "src", "image", "mod", "build-a"]):
        Result.objects.filter(record=graph.records[name]).update(exported_at=now - timedelta(minutes=age))
    assert listed(client.get("/orgs/acme/cache/steps/", {"sort": "-created"})) == ids(graph, "build-b", "src", "image", "mod", "build-a")
    assert listed(client.get("/orgs/acme/cache/steps/")) == ids(graph, "build-b", "src", "image", "mod", "build-a")
    assert listed(client.get("/orgs/acme/cache/steps/", {"sort": "created"})) == ids(graph, "build-a", "mod", "image", "src", "build-b")


def test_paging(client, operators, graph, monkeypatch):
    monkeypatch.setattr("dashboard.steps.PER_PAGE", 2)
    login(client, operators)
    seen = []
    for number in (1, 2, 3):
        page = client.get("/orgs/acme/cache/steps/", {"sort": "-size", "page": number})
        seen += listed(page)
    assert seen == ids(graph, *sorted(graph.records, key=lambda n: -size(n)))
    assert b"page 3 of 3" in page.content and b"sort=-size&amp;page=2" in page.content


@pytest.mark.parametrize(
    "params, field",
    [
        ({"sort": "colour"}, "sort"),
        ({"engine": "x"}, "engine"),
        ({"engine": "١"}, "engine"),
        ({"min_age_days": "-1"}, "min_age_days"),
        ({"max_age_days": "99999999"}, "max_age_days"),
        ({"used": "maybe"}, "used"),
        ({"digest": "sha256:xyz"}, "digest"),
        ({"digest": "ab\x00"}, "digest"),
        ({"q": "go\x00build"}, "q"),
        ({"layer": "sha256:12"}, "layer"),
    ],
)
def test_bad_parameters_are_a_clear_400(client, operators, graph, params, field):
    page = login(client, operators).get("/orgs/acme/cache/steps/", params)
    assert page.status_code == 400
    assert listed(page) == []
    assert f"<li class=\"error\">{field}:" in page.content.decode()


# ---- a step's page ---------------------------------------------------------------------------


def test_step_page_walks_the_graph_up_and_down(client, operators, graph):
    login(client, operators)
    mod = graph.records["mod"]
    html = client.get(f"/orgs/acme/cache/steps/{mod.pk}/").content.decode()
    assert COPY_MOD in html and mod.digest in html and mod.identity in html
    # Its input, the image, is a link; the build using it is listed as a dependant.
    assert f'<tr data-input="{graph.records["image"].pk}">' in html
    assert f'href="/orgs/acme/cache/steps/{graph.records["image"].pk}/">{PULL}</a>' in html
    assert f'href="/orgs/acme/cache/steps/{graph.records["build-a"].pk}/">{BUILD}</a>' in html
    src = client.get(f"/orgs/acme/cache/steps/{graph.records['src'].pk}/").content.decode()
    assert graph.records["src"].inputs.get().selector in src  # the selector of its input
    image = client.get(f"/orgs/acme/cache/steps/{graph.records['image'].pk}/").content.decode()
    assert "a root of the build graph" in image
    assert image.count('href="/orgs/acme/cache/steps/') >= 2  # both copies


def test_step_page_shows_the_layer_chain_base_first_and_its_exporter(client, operators, graph):
    html = login(client, operators).get(f"/orgs/acme/cache/steps/{graph.records['build-a'].pk}/").content.decode()
    positions = [html.index(f'<tr data-layer="{layer_digest(n)}">') for n in chain("build-a")]
    assert positions == sorted(positions)
    layer = Layer.objects.get(digest=layer_digest("build-a"))
    assert layer.diff_id in html and layer.media_type in html
    assert "ci-builder-1" in html[html.index('id="step-results"') :]
    assert "2 steps</a>" in html  # shares its description with build-b


def test_step_of_another_organization_is_404(client, operators, other_org, graph):
    from records.models import Record

    foreign = Record.objects.create(organization=other_org, identity="sha256:" + "1" * 64, digest="sha256:" + "2" * 64)
    assert login(client, operators).get(f"/orgs/acme/cache/steps/{foreign.pk}/").status_code == 404


# ---- a layer's contents ------------------------------------------------------------------------


def test_layer_contents_are_indexed_in_the_background_on_first_visit(
    client, operators, org, graph, django_capture_on_commit_callbacks, monkeypatch
):
    queued = []
    monkeypatch.setattr("records.tasks.index_layer_contents.apply_async", lambda args, **kw: queued.append(args[0]))
    layer = Layer.objects.get(organization=org, digest=layer_digest("build-a"))
    login(client, operators)
    with django_capture_on_commit_callbacks(execute=True):
        page = client.get(f"/orgs/acme/cache/layers/{layer.pk}/")
    assert b"being read in the background" in page.content and b'http-equiv="refresh"' in page.content
    assert queued == [layer.pk]
    with django_capture_on_commit_callbacks(execute=True):
        client.get(f"/orgs/acme/cache/layers/{layer.pk}/")
    assert queued == [layer.pk]  # asked once

    layer_contents.index_layer(layer.pk)  # what the task runs
    row = LayerContents.objects.get(layer=layer)
    assert (row.state, row.file_count, row.uncompressed_bytes) == ("complete", 2, 20_000 + 10)
    assert [entry[0] for entry in row.listing] == ["build-a/bin", "build-a/bin/build-a.out", "build-a/README"]
    html = client.get(f"/orgs/acme/cache/layers/{layer.pk}/").content.decode()
    assert 'http-equiv="refresh"' not in html
    assert "build-a/bin/build-a.out" in html[html.index('id="largest-files"') :]
    assert ">build-a</td>" in html[html.index('id="top-level"') :]
    found = client.get(f"/orgs/acme/cache/layers/{layer.pk}/", {"path": "READ"}).content.decode()
    listing = found[found.index('id="listing"') :]
    assert "build-a/README" in listing and "build-a.out" not in listing
    # The step page says how many files each indexed layer holds.
    step = client.get(f"/orgs/acme/cache/steps/{graph.records['build-a'].pk}/").content.decode()
    assert "2 files</a>" in step


def test_layer_listing_is_capped(org, graph, settings):
    settings.LAYER_LISTING_MAX = 2
    layer = Layer.objects.get(organization=org, digest=layer_digest("build-a"))
    LayerContents.objects.create(layer=layer)
    row = layer_contents.index_layer(layer.pk)
    assert len(row.listing) == 2 and row.summary["listing_truncated"] is True
    assert row.file_count == 2  # the counts still cover the whole layer


def test_layer_whose_blob_is_gone_is_marked_missing(org, graph):
    from blobs.storage import get_store

    layer = Layer.objects.get(organization=org, digest=layer_digest("mod"))
    get_store().delete(org.pk, layer.digest)
    row = layer_contents.index_layer(layer.pk)
    assert row.state == "missing"


def test_layer_of_another_organization_is_404(client, operators, other_org, graph):
    foreign = Layer.objects.create(organization=other_org, digest="sha256:" + "3" * 64, media_type="x", size=1, diff_id="sha256:" + "4" * 64)
    assert login(client, operators).get(f"/orgs/acme/cache/layers/{foreign.pk}/").status_code == 404


# ---- the overview and the blobs ------------------------------------------------------------------


def test_overview_lists_largest_and_recently_used_steps(client, operators, org, graph, fresh_use_counts):
    use(org, "src")
    html = login(client, operators).get("/orgs/acme/cache/").content.decode()
    largest = html[html.index('id="largest-steps"') : html.index('id="recent-steps"')]
    recent = html[html.index('id="recent-steps"') :]
    order = sorted(graph.records, key=lambda n: -chain_bytes(n))
    assert listed(type("R", (), {"content": largest.encode()})) == ids(graph, *order)
    assert listed(type("R", (), {"content": recent.split("Largest blobs")[0].encode()})) == ids(graph, "src")


def test_blob_links_to_its_steps(client, operators, org, graph):
    html = login(client, operators).get("/orgs/acme/cache/blobs/").content.decode()
    digest = layer_digest("mod")
    row = html[html.index(f'data-digest="{digest}"') :]
    row = row[: row.index("</tr>")]
    assert f'?layer={digest.replace(":", "%3A")}" class="steps-link">2 steps</a>' in row


def test_engine_strings_are_escaped(client, org, token, operators):
    from tests.buildkit_oracle import key, post_records, result, root_key, sha

    evil = '<script>alert("x")</script>'
    post_records(client, token, [key(root_key(sha("evil")), result("e", description=evil))], [])
    from records.models import Record, Result

    record = Record.objects.get(description=evil)
    Result.objects.create(record=record, chain=sha("c"), created_at=timezone.now(), complete=True)
    record.has_result = True
    record.save()
    login(client, operators)
    for url in ("/orgs/acme/cache/steps/", f"/orgs/acme/cache/steps/{record.pk}/"):
        html = client.get(url).content.decode()
        assert evil not in html and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html


def test_a_download_url_makes_the_step_used(client, operators, org, token, graph, fresh_use_counts):
    from tests.blob_helpers import download_url

    assert download_url(client, token, layer_digest("build-a")).status_code == 200
    result = Result.objects.get(record=graph.records["build-a"])
    assert result.last_used_at is not None
    assert Result.objects.filter(last_used_at__isnull=False).count() == 1
    html = login(client, operators).get("/orgs/acme/cache/steps/", {"used": "yes"}).content.decode()
    assert listed(type("R", (), {"content": html.encode()})) == ids(graph, "build-a")
