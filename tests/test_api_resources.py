"""/api/v1/: organizations, blobs, engine tokens and cache mounts, per role."""

from pathlib import Path

import pytest

from accounts.models import EngineToken, Organization
from api.models import ApiToken
from blobs.models import Blob
from blobs.storage import StoreUnavailable, get_store
from mounts.models import CacheMount, MountSnapshot
from tests.buildkit_oracle import sha
from tests.cache_rows import a_blob, a_layer, a_snapshot
from tests.support import engine_request

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("builtin")]
BLOBS = "/api/v1/orgs/acme/blobs/"
TOKENS = "/api/v1/orgs/acme/engine-tokens/"
MOUNTS = "/api/v1/orgs/acme/mounts/"


@pytest.fixture
def as_(operators):
    def header(role, **fields):
        return {"HTTP_AUTHORIZATION": f"Bearer {ApiToken.issue(operators[role], **fields)[1]}"}

    return header


# ---- organizations -----------------------------------------------------------------------


def test_orgs_lists_only_the_users_organizations(client, as_, org, other_org):
    body = client.get("/api/v1/orgs/", **as_("viewer")).json()
    assert [o["slug"] for o in body["results"]] == ["acme"] and body["count"] == 1
    detail = client.get("/api/v1/orgs/acme/", **as_("viewer")).json()
    assert detail == {
        "slug": "acme", "name": org.name, "import_period": org.import_period, "export_period": org.export_period,
        "export_timeout": org.export_timeout, "created_at": detail["created_at"],
    }
    assert client.get("/api/v1/orgs/globex/", **as_("viewer")).status_code == 404
    assert client.get("/api/v1/orgs/acme/", **as_("outsider")).status_code == 404


def test_a_superuser_sees_every_organization(client, org, other_org, django_user_model):
    root = django_user_model.objects.create_superuser("root", password="pw-root-123")
    header = {"HTTP_AUTHORIZATION": f"Bearer {ApiToken.issue(root)[1]}"}
    slugs = [o["slug"] for o in client.get("/api/v1/orgs/", **header).json()["results"]]
    assert slugs == sorted(Organization.objects.values_list("slug", flat=True))


def test_orgs_are_paged(client, operators, as_, org):
    from accounts.models import Membership

    for i in range(3):
        Membership.objects.create(organization=Organization.ensure(f"team-{i}"), user=operators["viewer"])
    header = as_("viewer")
    first = client.get("/api/v1/orgs/", {"page_size": 3}, **header).json()
    assert first["count"] == 4 and len(first["results"]) == 3 and first["next"]
    last = client.get(first["next"], **header).json()
    assert [o["slug"] for o in last["results"]] == ["team-2"] and last["next"] is None and last["previous"]


# ---- blobs -------------------------------------------------------------------------------


@pytest.fixture
def blobs(org, other_org):
    layer = a_blob(org, "layer", 300, uses=5)
    a_layer(org, layer, 300, results=2)
    loose = a_blob(org, "loose", 100, uses=1)
    big = a_blob(org, "big", 900)
    a_blob(other_org, "theirs", 5000)
    return {"layer": layer, "loose": loose, "big": big}


def test_blobs_sorted_and_described(client, as_, blobs):
    header = as_("viewer")
    body = client.get(BLOBS, **header).json()
    assert [b["digest"] for b in body["results"]] == [blobs["big"], blobs["layer"], blobs["loose"]]
    layer = body["results"][1]
    assert (layer["in_layer"], layer["result_count"], layer["step_count"], layer["size"]) == (True, 2, 2, 300)
    assert body["results"][0]["in_layer"] is False
    by_uses = client.get(BLOBS, {"sort": "-uses"}, **header).json()["results"]
    assert [b["digest"] for b in by_uses] == [blobs["layer"], blobs["loose"], blobs["big"]]
    up = client.get(BLOBS, {"sort": "size"}, **header).json()["results"]
    assert [b["size"] for b in up] == [100, 300, 900]


def test_blobs_by_digest_prefix(client, as_, blobs):
    prefix = blobs["loose"][:14]
    rows = client.get(BLOBS, {"q": prefix}, **as_("viewer")).json()["results"]
    assert [b["digest"] for b in rows] == [blobs["loose"]]
    rows = client.get(BLOBS, {"q": prefix.removeprefix("sha256:")}, **as_("viewer")).json()["results"]
    assert [b["digest"] for b in rows] == [blobs["loose"]]


@pytest.mark.parametrize("params, field", [({"sort": "colour"}, "sort"), ({"q": "xyz"}, "q"), ({"page": "a"}, "page")])
def test_bad_blob_parameters_are_400(client, as_, blobs, params, field):
    answer = client.get(BLOBS, params, **as_("viewer"))
    assert answer.status_code == 400 and field in answer.json()["fields"]


def test_one_blob(client, as_, blobs):
    answer = client.get(f"{BLOBS}{blobs['layer']}/", **as_("viewer"))
    assert answer.status_code == 200 and answer.json()["result_count"] == 2
    assert client.get(f"{BLOBS}{sha('theirs')}/", **as_("viewer")).status_code == 404
    assert client.get(f"{BLOBS}sha256:nothex/", **as_("viewer")).status_code == 404
    assert client.get(f"{BLOBS}{blobs['layer']}/", **as_("outsider")).status_code == 404


def test_deleting_a_blob(client, as_, org, blobs):
    path = Path(get_store().path(org.pk, blobs["layer"]))
    assert path.exists()
    assert client.delete(f"{BLOBS}{blobs['layer']}/", **as_("viewer")).status_code == 403
    assert client.delete(f"{BLOBS}{blobs['layer']}/", **as_("outsider")).status_code == 404
    assert Blob.objects.filter(digest=blobs["layer"]).exists()
    answer = client.delete(f"{BLOBS}{blobs['layer']}/", **as_("maintainer"))
    assert answer.status_code == 200
    assert answer.json() == {"digest": blobs["layer"], "freed_bytes": 300, "results_affected": 2}
    assert not Blob.objects.filter(digest=blobs["layer"]).exists() and not path.exists()
    assert client.delete(f"{BLOBS}{blobs['layer']}/", **as_("maintainer")).status_code == 404


def test_a_store_failure_is_503_and_keeps_the_blob(client, as_, org, blobs, monkeypatch):
    store = get_store()

    def fail(*args):
        raise StoreUnavailable("S3 is down")

    monkeypatch.setattr(type(store), "delete", fail)
    answer = client.delete(f"{BLOBS}{blobs['big']}/", **as_("maintainer"))
    assert answer.status_code == 503 and "S3 is down" in answer.json()["error"]
    assert int(answer["Retry-After"]) > 0
    assert Blob.objects.filter(digest=blobs["big"]).exists()


# ---- engine tokens -------------------------------------------------------------------------


def test_engine_tokens_listed_without_their_values(client, as_, org, other_org):
    active, value = EngineToken.issue(org, label="ci")
    revoked, _ = EngineToken.issue(org, label="old")
    revoked.revoke()
    EngineToken.issue(other_org, label="theirs")
    body = client.get(TOKENS, **as_("viewer")).json()
    assert [(t["label"], t["revoked"]) for t in body["results"]] == [("ci", False), ("old", True)]
    assert body["results"][0]["prefix"] == active.prefix and value not in str(body)
    assert client.get(TOKENS, **as_("outsider")).status_code == 404


def test_creating_an_engine_token_returns_it_once_and_it_works(client, as_, org):
    assert client.post(TOKENS, {"label": "ci"}, content_type="application/json", **as_("viewer")).status_code == 403
    answer = client.post(TOKENS, {"label": "ci", "read_only": True}, content_type="application/json", **as_("maintainer"))
    assert answer.status_code == 201
    body = answer.json()
    assert body["token"].startswith("cwt_") and body["read_only"] is True and body["label"] == "ci"
    row = EngineToken.objects.get(pk=body["id"])
    assert row.organization == org and body["token"] not in row.token_hash
    config = engine_request(client, "GET", "/magicache/config", token=body["token"], body={"EngineID": "e1"})
    assert config.status_code == 200
    assert "token" not in client.get(TOKENS, **as_("viewer")).json()["results"][0]


@pytest.mark.parametrize("body", [{"label": "x" * 201}, {"read_only": "maybe"}, {"label": ["a"]}])
def test_bad_engine_token_fields_are_400(client, as_, org, body):
    answer = client.post(TOKENS, body, content_type="application/json", **as_("maintainer"))
    assert answer.status_code == 400 and set(body) <= set(answer.json()["fields"])
    assert not EngineToken.objects.exists()


def test_revoking_an_engine_token(client, as_, org, other_org):
    row, value = EngineToken.issue(org)
    theirs, _ = EngineToken.issue(other_org)
    assert client.delete(f"{TOKENS}{row.pk}/", **as_("viewer")).status_code == 403
    assert client.delete(f"{TOKENS}{theirs.pk}/", **as_("maintainer")).status_code == 404
    answer = client.delete(f"{TOKENS}{row.pk}/", **as_("maintainer"))
    assert answer.status_code == 200 and answer.json()["revoked"] is True
    theirs.refresh_from_db()
    assert theirs.revoked_at is None
    config = engine_request(client, "GET", "/magicache/config", token=value, body={"EngineID": "e1"})
    assert config.status_code == 401


# ---- cache mounts --------------------------------------------------------------------------


@pytest.fixture
def mount(org):
    mount = CacheMount.objects.create(organization=org, name="go-mod")
    a_snapshot(mount, a_blob(org, "old", 400), 400, minutes_ago=10)
    a_snapshot(mount, a_blob(org, "new", 300), 300)
    CacheMount.objects.create(organization=org, name="npm")
    return mount


def test_mounts_listed_with_their_current_snapshot(client, as_, mount):
    body = client.get(MOUNTS, **as_("viewer")).json()
    assert [m["name"] for m in body["results"]] == ["go-mod", "npm"] and body["count"] == 2
    go = body["results"][0]
    assert go["current"]["digest"] == sha("new") and go["live_snapshots"] == 2 and go["synced"] is True
    assert body["results"][1]["current"] is None
    assert client.get(MOUNTS, **as_("outsider")).status_code == 404


def test_a_mounts_snapshots(client, as_, mount, other_org):
    body = client.get(f"{MOUNTS}{mount.pk}/", **as_("viewer")).json()
    assert [(s["digest"], s["role"]) for s in body["snapshots"]] == [(sha("new"), "current"), (sha("old"), "kept")]
    assert body["current"]["size"] == 300
    theirs = CacheMount.objects.create(organization=other_org, name="go-mod")
    assert client.get(f"{MOUNTS}{theirs.pk}/", **as_("maintainer")).status_code == 404


def test_evicting_a_mount(client, as_, org, mount):
    url = f"{MOUNTS}{mount.pk}/evict/"
    assert client.post(url, **as_("viewer")).status_code == 403
    assert client.post(url, **as_("maintainer", read_only=True)).status_code == 403
    assert MountSnapshot.objects.filter(mount=mount).count() == 2
    answer = client.post(url, **as_("maintainer"))
    assert answer.status_code == 200
    assert answer.json() == {"snapshots_deleted": 2, "blobs_deleted": {sha("old"): 400, sha("new"): 300},
                             "freed_bytes": 700}
    assert not MountSnapshot.objects.filter(mount=mount).exists()
    assert not Blob.objects.filter(organization=org, digest__in=[sha("old"), sha("new")]).exists()
    assert CacheMount.objects.filter(pk=mount.pk).exists()


def test_list_pages_cost_the_same_queries_however_many_rows(client, as_, org):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    header = as_("viewer")
    for i in range(3):
        a_layer(org, a_blob(org, f"layer {i}", 10 + i), 10 + i)
        a_snapshot(CacheMount.objects.create(organization=org, name=f"m{i}"), a_blob(org, f"snap {i}", 5), 5)
        EngineToken.issue(org, label=f"t{i}")

    def cost(url, size):
        with CaptureQueriesContext(connection) as queries:
            answer = client.get(url, {"page_size": size}, **header)
        assert answer.status_code == 200 and len(answer.json()["results"]) == size
        return len(queries)

    client.get("/api/v1/orgs/", **header)  # the token's last use is written once a minute: now
    for url in (BLOBS, MOUNTS, TOKENS, "/api/v1/orgs/acme/steps/"):
        assert cost(url, 1) == cost(url, 3), url


@pytest.mark.parametrize(
    "path",
    ["steps/99999999999999999999999/", "mounts/99999999999999999999999/", "engine-tokens/99999999999999999999999/"],
)
def test_ids_beyond_any_row_are_404(client, as_, org, path):
    method = client.delete if path.startswith("engine-tokens") else client.get
    assert method(f"/api/v1/orgs/acme/{path}", **as_("maintainer")).status_code == 404
