"""Per-organization storage policy: overrides of the eviction defaults, the passes' record,
the Policy page (usage, rules, last passes, preview) and its API, per role."""

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from activity.models import Activity
from api.models import ApiToken
from audit.models import Action, ActorKind, AuditEntry
from blobs.models import Blob
from retention import services
from retention.forms import parse_size
from retention.models import LifecyclePass, StoragePolicy
from tests.cache_rows import a_blob, a_layer

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("builtin", "fresh_use_counts")]
PAGE = "/orgs/acme/cache/policy/"
API = "/api/v1/orgs/acme/storage-policy/"
GB = 1024**3


def aged_blob(org, name, size, unused_days, layer=True):
    """A verified blob, in a layer of one step unless told otherwise, last used `unused_days` ago."""
    digest = a_blob(org, name, size)
    then = timezone.now() - timedelta(days=unused_days)
    Blob.objects.filter(organization=org, digest=digest).update(created_at=then, verified_at=then, last_used_at=then)
    if layer:
        a_layer(org, digest, size)
    return digest


@pytest.fixture
def cache(org, settings):
    """Defaults: evict after 30 days; blobs unused 5, 10, 20 and 40 days."""
    settings.EVICT_UNUSED_AFTER = 30
    settings.ORG_STORAGE_LIMIT = 0
    return {days: aged_blob(org, f"blob {days}", 1000 * days, days) for days in (5, 10, 20, 40)}


def evicted(report):
    return [blob.digest for kind in services.BLOB_KINDS for blob in report.items[kind]]


def test_defaults_then_overrides_change_what_the_pass_evicts(org, cache):
    assert evicted(services.preview(org)) == [cache[40]]
    StoragePolicy.objects.create(organization=org, unused_after_days=15)
    assert services.eviction_policy(org).unused_after_days == 15
    assert services.eviction_policy().unused_after_days == 30
    assert evicted(services.preview(org)) == [cache[40], cache[20]]
    # A limit of its own: 40-day and 20-day blobs go for age, then the least recently used
    # (10 days) while above 10 000 bytes (5 000 + 10 000 left).
    services.set_storage_policy(org, "command", storage_limit=10_000)
    report = services.preview(org)
    assert [b.digest for b in report.items[services.UNUSED_BLOBS]] == [cache[40], cache[20]]
    assert [b.digest for b in report.items[services.OVER_LIMIT_BLOBS]] == [cache[10]]
    # 0 switches a rule off for this organization whatever the default says.
    services.set_storage_policy(org, "command", storage_limit=None, unused_after_days=0)
    assert evicted(services.preview(org)) == []


def test_preview_lists_exactly_what_the_pass_then_deletes(org, other_org, cache, django_capture_on_commit_callbacks):
    services.set_storage_policy(org, "command", unused_after_days=15, storage_limit=6000)
    untouched = aged_blob(other_org, "other org", 500, 90)
    preview = services.preview(org, limit=None)
    expected = evicted(preview)
    # 40 and 20 days unused; then 15 000 bytes left is above 6 000: the 10-day one goes too.
    assert expected == [cache[40], cache[20], cache[10]]
    steps = services.steps_of_blobs(org, expected)
    assert {s.top_digest for s in steps} == set(expected)
    with django_capture_on_commit_callbacks(execute=True):
        [report] = services.collect_garbage(org, item_limit=None)
    assert evicted(report) == expected
    left = set(Blob.objects.filter(organization=org).values_list("digest", flat=True))
    assert left == set(cache.values()) - set(expected)
    assert Blob.objects.filter(digest=untouched).exists()
    # The pass is recorded with what it deleted, and audited once as the policy's.
    record = LifecyclePass.objects.get(organization=org)
    assert not record.dry_run and record.run_by == "schedule" and record.finished_at >= record.started_at
    assert record.freed_bytes == sum(1000 * d for d in cache if cache[d] in expected)
    assert sorted(sum(record.items.values(), [])) == sorted(expected)
    entry = AuditEntry.objects.get(organization=org, action=Action.LIFECYCLE_DELETED)
    assert entry.actor_kind == ActorKind.POLICY and entry.bytes_freed == record.freed_bytes
    assert entry.details["pass"] == record.pk
    counters = dict(Activity.objects.filter(organization=org).values_list("name", "value"))
    assert counters == {"evictions": len(expected), "evicted_bytes": record.freed_bytes}
    assert set(Activity.objects.filter(organization=org).values_list("label", flat=True)) == {"policy"}


def test_dry_and_empty_passes_are_recorded_but_not_audited(org, cache):
    services.collect_garbage(org, dry_run=True, run_by="command gc")
    services.set_storage_policy(org, "command", unused_after_days=0)
    services.collect_garbage(org)
    dry, empty = LifecyclePass.objects.order_by("pk")
    assert dry.dry_run and dry.counts == {services.UNUSED_BLOBS: 1} and dry.items[services.UNUSED_BLOBS] == [cache[40]]
    assert not empty.dry_run and empty.counts == {} and empty.deleted == 0
    assert Blob.objects.filter(digest=cache[40]).exists()
    assert not AuditEntry.objects.filter(action=Action.LIFECYCLE_DELETED).exists()


def test_next_pass_follows_the_last_scheduled_one(org, settings):
    settings.GC_INTERVAL = 600
    assert services.next_pass_at(org) is None
    now = timezone.now()
    LifecyclePass.objects.create(organization=org, started_at=now - timedelta(minutes=4), run_by="schedule")
    LifecyclePass.objects.create(organization=org, started_at=now, run_by="command gc")
    assert services.next_pass_at(org, now=now) == now + timedelta(minutes=6)


def test_pass_records_are_pruned_with_the_audit_log(org, settings):
    from audit import tasks

    settings.AUDIT_DAYS = 30
    now = timezone.now()
    old = LifecyclePass.objects.create(organization=org, started_at=now - timedelta(days=31))
    kept = LifecyclePass.objects.create(organization=org, started_at=now - timedelta(days=29))
    tasks.prune()
    assert list(LifecyclePass.objects.all()) == [kept] and old.pk != kept.pk


@pytest.mark.parametrize(
    "text,size", [("50 GB", 50 * GB), ("1.5TB", int(1.5 * 1024**4)), ("0", 0), ("1234", 1234), ("512 mib", 512 * 1024**2)]
)
def test_sizes_parse(text, size):
    assert parse_size(text) == size


# ---- the page --------------------------------------------------------------------------


def test_page_shows_usage_rules_passes_and_the_preview(client, operators, org, cache):
    services.set_storage_policy(org, operators["maintainer"], storage_limit=10 * GB, unused_after_days=14)
    services.collect_garbage(org, dry_run=True, run_by="command gc")
    client.force_login(operators["viewer"])
    page = client.get(PAGE).content.decode()
    total = sum(1000 * d for d in cache)
    assert re.search(rf"<strong>{re.escape(_size(total))}</strong> of 10.0\xa0GB", page)
    assert "Blobs not downloaded for 14 days are evicted; above 10.0 GB the least recently used blobs go first." in page
    assert page.count("this organization's own") == 2
    # The preview names the blobs (40 and 20 days unused) and the steps that go with them.
    preview = page[page.index('id="preview"'): page.index('id="passes"')]
    assert cache[40] in preview and cache[20] in preview and cache[10] not in preview
    assert preview.count('href="/orgs/acme/cache/steps/') == 2
    passes = page[page.index('id="passes"'):]
    assert "command gc (dry run)" in passes and "would delete 2 unused blobs (evicted)" in passes
    # Read-only for viewers.
    assert 'id="policy-form"' not in page and "Maintainers change these." in page


def _size(n):
    from django.template.defaultfilters import filesizeformat

    return filesizeformat(n)


def test_maintainer_sets_overrides_and_is_audited(client, operators, org):
    client.force_login(operators["maintainer"])
    assert 'id="policy-form"' in client.get(PAGE).content.decode()
    resp = client.post(PAGE, {"storage_limit": "20 GB", "unused_after_days": "7"})
    assert resp.status_code == 302 and resp["Location"] == PAGE
    own = StoragePolicy.objects.get(organization=org)
    assert (own.storage_limit, own.unused_after_days, own.updated_by) == (20 * GB, 7, operators["maintainer"])
    page = client.get(PAGE).content.decode()
    assert 'value="20 GB"' in page and "Storage policy saved" in page
    entry = AuditEntry.objects.get(action=Action.STORAGE_POLICY_CHANGED)
    assert entry.user == operators["maintainer"]
    assert entry.details["changed"] == {"storage_limit": {"from": None, "to": 20 * GB},
                                        "unused_after_days": {"from": None, "to": 7}}
    # Back to the defaults: empty fields.
    client.post(PAGE, {"storage_limit": "", "unused_after_days": ""})
    own.refresh_from_db()
    assert own.storage_limit is None and own.unused_after_days is None
    # Saving the same values again changes nothing and audits nothing.
    client.post(PAGE, {"storage_limit": "", "unused_after_days": ""})
    assert AuditEntry.objects.filter(action=Action.STORAGE_POLICY_CHANGED).count() == 2


@pytest.mark.parametrize(
    "fields,message",
    [({"storage_limit": "lots"}, "a size such as 50 GB"), ({"storage_limit": "5 XB"}, "a size such as"),
     ({"unused_after_days": "-1"}, "greater than or equal to 0"), ({"unused_after_days": "x"}, "whole number")],
)
def test_bad_input_is_400_and_changes_nothing(client, operators, org, fields, message):
    client.force_login(operators["maintainer"])
    resp = client.post(PAGE, fields)
    assert resp.status_code == 400 and message in resp.content.decode()
    assert not StoragePolicy.objects.exists() and not AuditEntry.objects.exists()


def test_roles_on_the_page(client, operators, org):
    client.force_login(operators["outsider"])
    assert client.get(PAGE).status_code == 404
    assert client.post(PAGE, {"storage_limit": "1 GB"}).status_code == 404
    client.force_login(operators["viewer"])
    assert client.get(PAGE).status_code == 200
    assert client.post(PAGE, {"storage_limit": "1 GB"}).status_code == 403
    assert not StoragePolicy.objects.exists()


# ---- the API ---------------------------------------------------------------------------


def bearer(user, **fields):
    return {"HTTP_AUTHORIZATION": f"Bearer {ApiToken.issue(user, **fields)[1]}"}


def test_api_reads_and_patches_the_policy(client, operators, org, settings):
    settings.EVICT_UNUSED_AFTER = 30
    settings.ORG_STORAGE_LIMIT = 0
    viewer = client.get(API, **bearer(operators["viewer"])).json()
    assert viewer["storage_limit"] is None and viewer["in_force"]["unused_after_days"] == 30
    assert viewer["defaults"]["described"] == "Blobs not downloaded for 30 days are evicted."
    resp = client.patch(API, {"storage_limit": 5 * GB}, content_type="application/json", **bearer(operators["maintainer"]))
    assert resp.status_code == 200, resp.content
    body = resp.json()
    assert body["storage_limit"] == 5 * GB and body["unused_after_days"] is None
    assert body["in_force"] == {"storage_limit": 5 * GB, "unused_after_days": 30,
                                "described": "Blobs not downloaded for 30 days are evicted; above 5.0 GB the least "
                                             "recently used blobs go first."}
    entry = AuditEntry.objects.get(action=Action.STORAGE_POLICY_CHANGED)
    assert entry.user == operators["maintainer"]


@pytest.mark.parametrize(
    "body,field",
    [({"storage_limit": "5"}, "storage_limit"), ({"storage_limit": True}, "storage_limit"),
     ({"storage_limit": -1}, "storage_limit"), ({"unused_after_days": 1.5}, "unused_after_days"),
     ({"unused_after_days": 10**9}, "unused_after_days"), ({"limit": 1}, "limit")],
)
def test_api_bad_patch_is_400_with_field_errors(client, operators, org, body, field):
    resp = client.patch(API, body, content_type="application/json", **bearer(operators["maintainer"]))
    assert resp.status_code == 400
    assert field in resp.json()["fields"]
    assert not StoragePolicy.objects.exists()


def test_api_roles(client, operators, org):
    patch = {"unused_after_days": 3}
    assert client.get(API, **bearer(operators["outsider"])).status_code == 404
    assert client.patch(API, patch, content_type="application/json", **bearer(operators["viewer"])).status_code == 403
    ro = bearer(operators["maintainer"], read_only=True)
    assert client.patch(API, patch, content_type="application/json", **ro).status_code == 403
    assert not StoragePolicy.objects.exists()


def test_api_lists_the_passes(client, operators, org, cache):
    services.collect_garbage(org, run_by="schedule")
    services.collect_garbage(org, dry_run=True, run_by="maya")
    resp = client.get("/api/v1/orgs/acme/lifecycle/passes/?page_size=1", **bearer(operators["viewer"]))
    body = resp.json()
    assert body["count"] == 2 and body["next"]
    [latest] = body["results"]
    assert latest["dry_run"] and latest["run_by"] == "maya" and latest["counts"] == {}
    older = client.get(body["next"], **bearer(operators["viewer"])).json()["results"][0]
    assert older["items"] == {"unused_blobs": [cache[40]]} and older["freed_bytes"] == 40_000
    assert client.get("/api/v1/orgs/acme/lifecycle/passes/", **bearer(operators["outsider"])).status_code == 404
