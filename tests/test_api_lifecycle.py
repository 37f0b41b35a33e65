"""/api/v1/orgs/{slug}/lifecycle/: the storage lifecycle pass previewed and run, per role."""

from datetime import timedelta

import pytest
from django.utils import timezone

from api.models import ApiToken
from blobs.models import Blob
from mounts.models import CacheMount, MountSnapshot
from records.models import PendingExport, Record
from retention import services
from tests.buildkit_oracle import sha
from tests.cache_rows import a_blob, a_layer, a_snapshot

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("builtin", "fresh_use_counts")]
PREVIEW = "/api/v1/orgs/acme/lifecycle/preview/"
RUN = "/api/v1/orgs/acme/lifecycle/run/"
LONG_AGO = timedelta(days=60)


@pytest.fixture
def as_(operators):
    def header(role, **fields):
        return {"HTTP_AUTHORIZATION": f"Bearer {ApiToken.issue(operators[role], **fields)[1]}"}

    return header


def old_blob(org, name, size):
    digest = a_blob(org, name, size)
    then = timezone.now() - LONG_AGO
    Blob.objects.filter(organization=org, digest=digest).update(created_at=then, verified_at=then, last_used_at=None)
    return digest


@pytest.fixture
def garbage(org, other_org, settings):
    """Something of every kind for the pass to delete, and things it must keep."""
    settings.EVICT_UNUSED_AFTER = 30
    long_ago = timezone.now() - LONG_AGO
    loose = [old_blob(org, f"loose {n}", 100 + n) for n in range(3)]
    young = a_blob(org, "young", 10)
    Blob.objects.filter(digest=young).update(last_used_at=timezone.now())
    unused = old_blob(org, "unused layer", 700)
    a_layer(org, unused, 700)
    used = old_blob(org, "used layer", 800)
    a_layer(org, used, 800)
    Blob.objects.filter(digest=used).update(last_used_at=timezone.now())
    mount = CacheMount.objects.create(organization=org, name="go-mod")
    live = a_snapshot(mount, old_blob(org, "live snapshot", 50), 50)
    Blob.objects.filter(digest=live.digest).update(last_used_at=timezone.now())
    released = a_snapshot(mount, sha("released snapshot"), 40)
    MountSnapshot.objects.filter(pk=released.pk).update(released_at=long_ago)
    failed = MountSnapshot.objects.create(
        mount=mount, digest=sha("failed snapshot"), size=30, state="failed", created_at=long_ago, failed_at=long_ago
    )
    record = Record.objects.create(organization=org, identity=sha("asked"), digest=sha("asked"))
    stale = PendingExport.objects.create(
        record=record, cache_ref_id="ref-1", result_created_at=long_ago, asked_at=long_ago
    )
    theirs = old_blob(other_org, "theirs", 5000)
    return {
        "loose": loose, "young": young, "unused": unused, "used": used, "live": live,
        "released": released, "failed": failed, "stale": stale, "theirs": theirs,
    }


def listed(report):
    """Per kind, the identities of the listed items."""
    items = report["items"]
    return {
        kind: [row["digest"] if "blobs" in kind else row["id"] for row in rows] for kind, rows in items.items()
    }


def test_the_preview_lists_exactly_what_the_run_deletes(client, as_, org, garbage):
    header = as_("maintainer")
    preview = client.get(PREVIEW, {"limit": 500}, **header).json()
    assert preview["dry_run"] is True
    assert listed(preview) == {
        "released_snapshots": [garbage["released"].pk],
        "failed_snapshots": [garbage["failed"].pk],
        "pending_exports": [garbage["stale"].pk],
        "unreferenced_blobs": sorted(garbage["loose"], key=lambda d: Blob.objects.get(digest=d).pk),
        "unused_blobs": [garbage["unused"]],
        "over_limit_blobs": [],
    }
    assert preview["counts"] == {kind: len(ids) for kind, ids in listed(preview).items()}
    assert preview["bytes"]["unreferenced_blobs"] == 100 + 101 + 102
    assert preview["bytes"]["unused_blobs"] == 700
    assert preview["freed_bytes"] == 303 + 700
    assert preview["unlisted"] == dict.fromkeys(preview["counts"], 0)
    assert preview["items"]["released_snapshots"][0]["mount_name"] == "go-mod"
    assert preview["items"]["pending_exports"][0]["cache_ref_id"] == "ref-1"
    # The preview deleted nothing.
    assert Blob.objects.filter(organization=org).count() == 7
    assert MountSnapshot.objects.filter(pk__in=[garbage["released"].pk, garbage["failed"].pk]).count() == 2

    answer = client.post(RUN, {"limit": 500}, content_type="application/json", **header)
    assert answer.status_code == 200, answer.content
    run = answer.json()
    assert run["dry_run"] is False
    assert listed(run) == listed(preview)
    assert (run["counts"], run["bytes"], run["freed_bytes"]) == (preview["counts"], preview["bytes"], preview["freed_bytes"])
    # And those are gone, the rest is there.
    left = set(Blob.objects.values_list("digest", flat=True))
    assert left == {garbage["young"], garbage["used"], garbage["live"].digest, garbage["theirs"]}
    assert list(MountSnapshot.objects.values_list("pk", flat=True)) == [garbage["live"].pk]
    assert not PendingExport.objects.exists()
    # Nothing left for the next pass.
    again = client.get(PREVIEW, **header).json()
    assert sum(again["counts"].values()) == 0


def test_the_preview_is_retention_preview(client, as_, org, garbage):
    """The API answers what the service answers, field for field."""
    report = services.preview(org, limit=2)
    body = client.get(PREVIEW, {"limit": 2}, **as_("viewer")).json()
    assert body["counts"] == report.counts and body["bytes"] == report.bytes
    assert body["grace_seconds"] == int(report.grace.total_seconds())
    assert body["eviction"] == report.policy.describe()
    assert [b["digest"] for b in body["items"]["unreferenced_blobs"]] == [
        b.digest for b in report.items["unreferenced_blobs"]
    ]
    assert len(body["items"]["unreferenced_blobs"]) == 2 and body["unlisted"]["unreferenced_blobs"] == 1


def test_limit_zero_counts_without_listing(client, as_, garbage):
    body = client.get(PREVIEW, {"limit": 0}, **as_("viewer")).json()
    assert body["counts"]["unreferenced_blobs"] == 3 and body["items"]["unreferenced_blobs"] == []
    assert body["unlisted"]["unreferenced_blobs"] == 3


def test_a_dry_run_deletes_nothing_and_answers_the_preview(client, as_, org, garbage):
    header = as_("maintainer")
    preview = client.get(PREVIEW, **header).json()
    dry = client.post(RUN, {"dry_run": True}, content_type="application/json", **header).json()
    assert dry["dry_run"] is True and listed(dry) == listed(preview) and dry["counts"] == preview["counts"]
    assert Blob.objects.filter(organization=org).count() == 7 and PendingExport.objects.exists()


def test_an_empty_body_runs_for_real(client, as_, org, garbage):
    answer = client.post(RUN, content_type="application/json", **as_("maintainer"))  # no body at all
    assert answer.status_code == 200 and answer.json()["dry_run"] is False
    assert not PendingExport.objects.exists()


def test_lifecycle_per_role(client, as_, org, other_org, garbage):
    assert client.get(PREVIEW, **as_("outsider")).status_code == 404
    assert client.post(RUN, {}, content_type="application/json", **as_("outsider")).status_code == 404
    assert client.get("/api/v1/orgs/globex/lifecycle/preview/", **as_("maintainer")).status_code == 404
    assert client.get(PREVIEW, **as_("viewer")).status_code == 200
    viewer = client.post(RUN, {}, content_type="application/json", **as_("viewer"))
    assert viewer.status_code == 403 and viewer.json()["error"]
    read_only = client.post(RUN, {}, content_type="application/json", **as_("maintainer", read_only=True))
    assert read_only.status_code == 403 and "read-only" in read_only.json()["error"]
    assert client.post(RUN, {}, content_type="application/json").status_code == 401
    # Nothing was deleted by any of them.
    assert PendingExport.objects.exists() and Blob.objects.filter(organization=org).count() == 7
    assert Blob.objects.filter(organization=other_org).count() == 1


@pytest.mark.parametrize("limit", ["501", "-1", "abc", "1.5", "99999999999999999999", "٣"])
def test_a_bad_preview_limit_is_400(client, as_, garbage, limit):
    answer = client.get(PREVIEW, {"limit": limit}, **as_("viewer"))
    assert answer.status_code == 400 and "limit" in answer.json()["fields"]


@pytest.mark.parametrize(
    "body,field",
    [
        ({"dry_run": "yes"}, "dry_run"),
        ({"dry_run": 1}, "dry_run"),
        ({"limit": 501}, "limit"),
        ({"limit": True}, "limit"),
        ({"limit": "10"}, "limit"),
        ({"force": True}, "force"),
    ],
)
def test_a_bad_run_body_is_400_and_runs_nothing(client, as_, garbage, body, field):
    answer = client.post(RUN, body, content_type="application/json", **as_("maintainer"))
    assert answer.status_code == 400 and field in answer.json()["fields"]
    assert PendingExport.objects.exists()


@pytest.mark.parametrize("raw", ["[true]", '"dry"', "{oops"])
def test_a_run_body_that_is_not_an_object_is_400(client, as_, garbage, raw):
    answer = client.post(RUN, raw, content_type="application/json", **as_("maintainer"))
    assert answer.status_code == 400 and answer.json()["error"]
    assert PendingExport.objects.exists()


def test_a_failed_pass_is_503_not_500(client, as_, org, garbage, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(services, "collect_organization", broken)
    answer = client.post(RUN, {}, content_type="application/json", **as_("maintainer"))
    assert answer.status_code == 503 and "database went away" in answer.json()["error"]
