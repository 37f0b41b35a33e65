"""/api/v1/orgs/ORG/steps/: listing, searching, a step's detail, and evicting steps."""

import pytest

from api.models import ApiToken
from blobs.models import Blob
from records.models import Result
from tests.step_graph import BUILD, COPY_MOD, PULL, STEPS, chain, export_graph, layer_digest, size

pytestmark = pytest.mark.usefixtures("builtin")
STEPS_URL = "/api/v1/orgs/acme/steps/"
EVICT_URL = "/api/v1/orgs/acme/steps/evict/"


@pytest.fixture
def graph(client, org, token):
    return export_graph(client, org, token)


@pytest.fixture
def as_(operators):
    """as_(role) -> the Authorization header of a read-write API token of that operator."""

    def header(role):
        return {"HTTP_AUTHORIZATION": f"Bearer {ApiToken.issue(operators[role])[1]}"}

    return header


def test_list_rows_describe_each_step(client, as_, graph):
    answer = client.get(STEPS_URL, {"sort": "-total_size"}, **as_("viewer"))
    assert answer.status_code == 200
    body = answer.json()
    assert body["count"] == len(STEPS) and body["next"] is None and body["previous"] is None
    rows = {row["id"]: row for row in body["results"]}
    image = rows[graph.records["image"].pk]
    assert image["description"] == PULL and image["digest"] == graph.records["image"].digest
    assert image["size"] == size("image") and image["layer_count"] == 1
    assert image["dependants"] == 2 and image["engine"]["engine_id"] == "ci-builder-1"
    build_a = rows[graph.records["build-a"].pk]
    assert build_a["chain_size"] == sum(size(p) for p in chain("build-a")) and build_a["layer_count"] == 3
    assert build_a["dependants"] == 0 and build_a["last_used_at"] is None
    chain_sizes = [row["chain_size"] for row in body["results"]]
    assert chain_sizes == sorted(chain_sizes, reverse=True)


def test_filters_are_the_dashboard_search(client, as_, graph):
    viewer = as_("viewer")
    ids = lambda params: {row["id"] for row in client.get(STEPS_URL, params, **viewer).json()["results"]}  # noqa: E731
    builds = {graph.records["build-a"].pk, graph.records["build-b"].pk}
    assert ids({"q": "GO BUILD"}) == builds
    assert ids({"description": BUILD}) == builds
    assert ids({"digest": graph.records["mod"].digest[:16]}) == {graph.records["mod"].pk}
    assert ids({"layer": layer_digest("mod")}) == {graph.records["mod"].pk, graph.records["build-a"].pk}
    assert ids({"used": "yes"}) == set()
    assert len(ids({"used": "no", "engine": graph.engine.pk})) == len(STEPS)
    assert ids({"min_age_days": "3650"}) == set()


def test_sorting_both_ways(client, as_, graph):
    viewer = as_("viewer")
    up = [row["size"] for row in client.get(STEPS_URL, {"sort": "size"}, **viewer).json()["results"]]
    down = [row["size"] for row in client.get(STEPS_URL, {"sort": "-size"}, **viewer).json()["results"]]
    assert up == sorted(up) and down == sorted(up, reverse=True) and len(up) == len(STEPS)


def test_pages_link_to_each_other_without_repeating_rows(client, as_, graph):
    viewer = as_("viewer")
    first = client.get(STEPS_URL, {"page_size": "2", "sort": "size"}, **viewer).json()
    assert first["count"] == 5 and len(first["results"]) == 2 and first["previous"] is None
    assert "page=2" in first["next"] and "sort=size" in first["next"]
    second = client.get(first["next"], **viewer).json()
    third = client.get(second["next"], **viewer).json()
    assert third["next"] is None and len(third["results"]) == 1 and second["previous"]
    seen = [row["id"] for page in (first, second, third) for row in page["results"]]
    assert sorted(seen) == sorted(r.pk for r in graph.records.values())


@pytest.mark.parametrize(
    "params, field",
    [
        ({"sort": "colour"}, "sort"),
        ({"used": "maybe"}, "used"),
        ({"engine": "x"}, "engine"),
        ({"min_age_days": "-1"}, "min_age_days"),
        ({"digest": "zzz"}, "digest"),
        ({"layer": "sha256:12"}, "layer"),
        ({"q": "a\x00b"}, "q"),
        ({"page": "0"}, "page"),
        ({"page": "9"}, "page"),
        ({"page_size": "501"}, "page_size"),
    ],
)
def test_bad_parameters_are_400_naming_the_field(client, as_, graph, params, field):
    answer = client.get(STEPS_URL, params, **as_("viewer"))
    assert answer.status_code == 400
    assert field in answer.json()["fields"]


def test_outsiders_get_404(client, as_, graph):
    step = graph.records["mod"].pk
    outsider = as_("outsider")
    assert client.get(STEPS_URL, **outsider).status_code == 404
    assert client.get(f"{STEPS_URL}{step}/", **outsider).status_code == 404
    assert client.delete(f"{STEPS_URL}{step}/", **outsider).status_code == 404
    assert client.post(EVICT_URL, {"q": "go"}, content_type="application/json", **outsider).status_code == 404
    assert Result.objects.count() == len(STEPS)


def test_a_steps_detail_has_inputs_dependants_and_chain(client, as_, graph):
    mod = graph.records["mod"]
    answer = client.get(f"{STEPS_URL}{mod.pk}/", **as_("viewer"))
    assert answer.status_code == 200
    body = answer.json()
    assert body["description"] == COPY_MOD and body["identity"] == mod.identity and body["results"] == 1
    assert [i["index"] for i in body["inputs"]] == [0]
    assert body["inputs"][0]["alternatives"][0]["source"]["id"] == graph.records["image"].pk
    assert [d["id"] for d in body["dependants"]] == [graph.records["build-a"].pk] and body["dependant_count"] == 1
    assert [layer["digest"] for layer in body["layers"]] == [layer_digest("image"), layer_digest("mod")]
    assert body["layers"][1]["blob_state"] == "verified" and body["layers"][1]["size"] == size("mod")
    assert client.get(f"{STEPS_URL}999999/", **as_("viewer")).status_code == 404


def test_viewers_cannot_evict(client, as_, graph):
    viewer = as_("viewer")
    assert client.delete(f"{STEPS_URL}{graph.records['build-a'].pk}/", **viewer).status_code == 403
    answer = client.post(EVICT_URL, {"q": "go build"}, content_type="application/json", **viewer)
    assert answer.status_code == 403 and answer.json()["error"]
    assert Result.objects.count() == len(STEPS)


def test_a_maintainer_evicts_one_step(client, as_, org, graph):
    build_a = graph.records["build-a"]
    answer = client.delete(f"{STEPS_URL}{build_a.pk}/", **as_("maintainer"))
    assert answer.status_code == 200
    body = answer.json()
    assert body["steps"] == 1 and body["results"] == 1
    assert body["blobs_deleted"] == {layer_digest("build-a"): size("build-a")}
    assert body["freed_bytes"] == size("build-a") and body["blobs_kept"] == []
    assert not Result.objects.filter(record=build_a).exists()
    assert not Blob.objects.filter(organization=org, digest=layer_digest("build-a")).exists()
    # The step has no results left: evicting it again is 404.
    assert client.delete(f"{STEPS_URL}{build_a.pk}/", **as_("maintainer")).status_code == 404


def test_bulk_eviction_dry_run_lists_exactly_what_the_real_call_evicts(client, as_, org, graph):
    maintainer = as_("maintainer")
    search = {"q": "go build"}
    dry = client.post(EVICT_URL, {**search, "dry_run": True}, content_type="application/json", **maintainer)
    assert dry.status_code == 200
    dry = dry.json()
    builds = sorted([graph.records["build-a"].pk, graph.records["build-b"].pk])
    assert dry["dry_run"] is True and dry["evicted"] is None
    assert dry["step_ids"] == builds and dry["results"] == 2
    assert dry["blobs"] == {layer_digest("build-a"): size("build-a"), layer_digest("build-b"): size("build-b")}
    assert dry["freed_bytes"] == size("build-a") + size("build-b")
    assert Result.objects.count() == len(STEPS)  # nothing went
    real = client.post(EVICT_URL, search, content_type="application/json", **maintainer).json()
    assert real["dry_run"] is False
    assert real["step_ids"] == dry["step_ids"] and real["blobs"] == dry["blobs"]
    assert real["freed_bytes"] == dry["freed_bytes"] and real["evicted"]["steps"] == 2
    assert set(Result.objects.values_list("record_id", flat=True)) == {
        graph.records[n].pk for n in ("image", "mod", "src")
    }
    assert not Blob.objects.filter(organization=org, digest__in=dry["blobs"]).exists()


def test_bulk_eviction_refuses_an_empty_search(client, as_, graph):
    for body in ({}, {"dry_run": True}, {"sort": "size"}, {"q": "  "}):
        answer = client.post(EVICT_URL, body, content_type="application/json", **as_("maintainer"))
        assert answer.status_code == 400, body
        assert "search" in answer.json()["fields"]
    assert Result.objects.count() == len(STEPS)


@pytest.mark.parametrize(
    "body, field",
    [
        ({"q": "go", "dry_run": "yes"}, "dry_run"),
        ({"q": ["go"]}, "q"),
        ({"q": "go", "used": "sometimes"}, "used"),
        ({"q": "go", "sort": "colour"}, "sort"),
        ({"engine": True}, "engine"),
    ],
)
def test_bulk_eviction_bad_fields_are_400(client, as_, graph, body, field):
    answer = client.post(EVICT_URL, body, content_type="application/json", **as_("maintainer"))
    assert answer.status_code == 400 and field in answer.json()["fields"]
    assert Result.objects.count() == len(STEPS)


def test_bulk_eviction_takes_numbers_and_checks_the_expected_count(client, as_, graph):
    maintainer = as_("maintainer")
    body = {"engine": graph.engine.pk, "description": BUILD}
    stale = client.post(EVICT_URL, {**body, "expected_count": 3}, content_type="application/json", **maintainer)
    assert stale.status_code == 409 and "2" in stale.json()["error"]
    assert Result.objects.count() == len(STEPS)
    done = client.post(EVICT_URL, {**body, "expected_count": 2}, content_type="application/json", **maintainer)
    assert done.status_code == 200 and len(done.json()["step_ids"]) == 2


def test_a_non_object_body_is_400(client, as_, graph):
    answer = client.post(EVICT_URL, [1, 2], content_type="application/json", **as_("maintainer"))
    assert answer.status_code == 400
    answer = client.post(EVICT_URL, b"{not json", content_type="application/json", **as_("maintainer"))
    assert answer.status_code == 400
