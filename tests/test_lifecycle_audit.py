"""The lifecycle pass's record and audit entry: a pass that fails part way, who started a
pass, and the eviction counters every eviction path adds to."""

import io
import logging
from datetime import timedelta

import pytest

from activity.models import Activity
from audit.models import Action, ActorKind, AuditEntry
from blobs.models import Blob
from retention import services
from retention.models import LifecyclePass
from tests.test_retention import MINUTE, blob_exists, grace, make_blob

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("builtin", "fresh_use_counts")]


def counters(org):
    return {(name, label): value for name, label, value in
            Activity.objects.filter(organization=org).values_list("name", "label", "value")}


def test_a_pass_that_fails_part_way_records_and_audits_what_it_deleted(org, monkeypatch):
    digest = make_blob(org, size=700, age=grace(org) + MINUTE)

    def broken(*args, **kwargs):
        raise RuntimeError("eviction broke")

    monkeypatch.setattr(services, "_evict", broken)
    [report] = services.collect_garbage(org)
    assert not blob_exists(org, digest)
    assert report.error == "RuntimeError: eviction broke"
    assert report.counts[services.UNREFERENCED_BLOBS] == 1 and report.freed_bytes == 700
    record = LifecyclePass.objects.get()
    assert record.counts == {services.UNREFERENCED_BLOBS: 1} and record.freed_bytes == 700
    assert record.error == "RuntimeError: eviction broke" and record.items[services.UNREFERENCED_BLOBS] == [digest]
    entry = AuditEntry.objects.get(action=Action.LIFECYCLE_DELETED)
    assert entry.bytes_freed == 700 and entry.details["error"] == "RuntimeError: eviction broke"
    assert entry.details["pass"] == record.pk


def test_a_pass_that_cannot_be_recorded_does_not_stop_the_others(org, other_org, monkeypatch, caplog):
    mine = make_blob(org, age=grace(org) + MINUTE)
    theirs = make_blob(other_org, age=grace(other_org) + MINUTE)
    create = LifecyclePass.objects.create

    def fail_for_acme(**fields):
        if fields["organization"] == org:
            raise RuntimeError("database hiccup")
        return create(**fields)

    monkeypatch.setattr(LifecyclePass.objects, "create", fail_for_acme)
    with caplog.at_level(logging.ERROR, logger="cacheweb.retention"):
        reports = services.collect_garbage()
    assert [r.organization for r in reports] == ["acme", "globex"]
    assert not blob_exists(org, mine) and not blob_exists(other_org, theirs)
    assert list(LifecyclePass.objects.values_list("organization__slug", flat=True)) == ["globex"]
    assert "could not record the pass" in caplog.text and "gc org=acme" in caplog.text


def test_a_pass_started_by_a_person_is_audited_with_that_person(client, org, operators, django_capture_on_commit_callbacks):
    from api.models import ApiToken

    make_blob(org, size=300, age=grace(org) + MINUTE)
    header = {"HTTP_AUTHORIZATION": f"Bearer {ApiToken.issue(operators['maintainer'])[1]}"}
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/api/v1/orgs/acme/lifecycle/run/", {}, content_type="application/json", **header)
    assert response.status_code == 200, response.content
    entry = AuditEntry.objects.get(action=Action.LIFECYCLE_DELETED)
    assert entry.actor_kind == ActorKind.USER and entry.user == operators["maintainer"]
    assert LifecyclePass.objects.get().run_by == "maya"
    assert counters(org) == {("evictions", "user"): 1, ("evicted_bytes", "user"): 300}


def test_manage_gc_is_audited_as_the_command_and_the_schedule_as_policy(org, django_capture_on_commit_callbacks):
    from django.core.management import call_command

    make_blob(org, size=300, age=grace(org) + MINUTE)
    with django_capture_on_commit_callbacks(execute=True):
        call_command("gc", "--org", "acme", stdout=io.StringIO())
    entry = AuditEntry.objects.get(action=Action.LIFECYCLE_DELETED)
    assert entry.actor_kind == ActorKind.COMMAND and entry.actor_name == "gc"
    assert LifecyclePass.objects.get().run_by == "command gc"
    assert counters(org) == {("evictions", "user"): 1, ("evicted_bytes", "user"): 300}

    make_blob(org, size=200, age=grace(org) + MINUTE)
    with django_capture_on_commit_callbacks(execute=True):
        services.collect_garbage()
    scheduled = AuditEntry.objects.filter(action=Action.LIFECYCLE_DELETED).latest("pk")
    assert scheduled.actor_kind == ActorKind.POLICY
    assert LifecyclePass.objects.latest("pk").run_by == "schedule"
    assert counters(org)[("evictions", "policy")] == 1


# ---- Django admin ----------------------------------------------------------------------


def test_an_admin_edit_of_a_storage_policy_goes_through_the_service(admin_client, admin_user, org):
    from retention.models import StoragePolicy

    resp = admin_client.post("/admin/retention/storagepolicy/add/",
                             {"organization": org.pk, "storage_limit": "5000", "unused_after_days": ""})
    assert resp.status_code == 302, resp.content.decode()[:2000]
    policy = StoragePolicy.objects.get(organization=org)
    assert policy.storage_limit == 5000 and policy.updated_by == admin_user
    entry = AuditEntry.objects.get()
    assert entry.action == Action.STORAGE_POLICY_CHANGED and entry.user == admin_user
    assert entry.details["changed"] == {"storage_limit": {"from": None, "to": 5000}}

    resp = admin_client.post(f"/admin/retention/storagepolicy/{org.pk}/change/",
                             {"storage_limit": "5000", "unused_after_days": "7"})
    assert resp.status_code == 302, resp.content.decode()[:2000]
    assert StoragePolicy.objects.get(organization=org).unused_after_days == 7
    entries = list(AuditEntry.objects.order_by("pk").values_list("action", flat=True))
    assert entries == [Action.STORAGE_POLICY_CHANGED, Action.STORAGE_POLICY_CHANGED]
    assert AuditEntry.objects.latest("pk").details["changed"] == {"unused_after_days": {"from": None, "to": 7}}


def test_superusers_cannot_delete_audit_entries_or_pass_records_in_admin(admin_client, org):
    from audit import services as audit

    entry = audit.record(org, "command", Action.STORAGE_POLICY_CHANGED, target="x")
    record = LifecyclePass.objects.create(organization=org, started_at=entry.at)
    for url, pk in (("/admin/audit/auditentry/", entry.pk), ("/admin/retention/lifecyclepass/", record.pk)):
        assert admin_client.post(f"{url}{pk}/delete/", {"post": "yes"}).status_code == 403
        resp = admin_client.post(url, {"action": "delete_selected", "_selected_action": [pk], "post": "yes"})
        assert resp.status_code in (200, 302)
        assert admin_client.get(url).status_code == 200
    assert AuditEntry.objects.filter(pk=entry.pk).exists() and LifecyclePass.objects.filter(pk=record.pk).exists()


# ---- one unit, one rule: blobs deleted, verified bytes freed ---------------------------


def test_every_eviction_counts_blobs_deleted_and_verified_bytes_only(org, operators, django_capture_on_commit_callbacks):
    from blobs.services import delete_blob
    from mounts.models import CacheMount
    from mounts.services import evict_mount
    from records.eviction import evict_steps
    from records.models import Record
    from tests.cache_rows import a_blob, a_layer, a_snapshot

    maya = operators["maintainer"]
    # Two steps whose one layer is one blob: 2 steps, 1 blob.
    shared = a_blob(org, "shared layer", 500)
    a_layer(org, shared, 500, results=2)
    # Two snapshots of one mount holding one blob, and a pending one: 2 blobs, 700 bytes.
    mount = CacheMount.objects.create(organization=org, name="go-mod")
    held = a_blob(org, "mount blob", 700)
    a_snapshot(mount, held, 700)
    a_snapshot(mount, held, 700, released=True)
    pending = a_blob(org, "mount pending", 900, state="pending")
    a_snapshot(mount, pending, 900, released=True)
    loose_pending = a_blob(org, "loose pending", 400, state="pending")
    with django_capture_on_commit_callbacks(execute=True):
        done = evict_steps(org, list(Record.objects.filter(organization=org).values_list("pk", flat=True)), actor=maya)
        snapshots, freed = evict_mount(mount, actor=maya)
        assert delete_blob(org, loose_pending, actor=maya) == 0
    assert done.steps == 2 and done.blobs_deleted == {shared: 500}
    assert snapshots == 3 and freed == {held: 700, pending: 0}
    assert AuditEntry.objects.get(action=Action.MOUNT_EVICTED).bytes_freed == 700
    assert counters(org) == {("evictions", "user"): 1 + 2 + 1, ("evicted_bytes", "user"): 500 + 700}


def test_a_pass_counts_no_bytes_for_a_pending_blob_dry_or_not(org):
    verified = make_blob(org, size=600, age=grace(org) + MINUTE)
    pending = make_blob(org, size=800, state="pending", age=grace(org) + MINUTE)
    [dry] = services.collect_garbage(org, dry_run=True)
    [real] = services.collect_garbage(org)
    for report in (dry, real):
        assert report.counts[services.UNREFERENCED_BLOBS] == 2 and report.freed_bytes == 600
    assert not blob_exists(org, verified) and not blob_exists(org, pending)
    assert AuditEntry.objects.get(action=Action.LIFECYCLE_DELETED).bytes_freed == 600


def test_the_dashboard_says_a_pending_blob_freed_nothing(client, operators, org):
    from tests.cache_rows import a_blob

    client.force_login(operators["maintainer"])
    digest = a_blob(org, "never arrived", 5000, state="pending")
    response = client.post(f"/orgs/acme/cache/blobs/{digest}/evict", follow=True)
    assert response.status_code == 200
    shown = response.content.decode()
    assert f"Evicted {digest[:19]}… (0\xa0bytes freed)" in shown and "4.9" not in shown
    assert not Blob.objects.filter(digest=digest).exists()


def test_the_policy_page_and_the_api_list_passes_from_one_queryset(client, operators, org, monkeypatch):
    from django.utils import timezone

    now = timezone.now()
    # Same start: the newer row first on both.
    first = LifecyclePass.objects.create(organization=org, started_at=now, run_by="schedule")
    second = LifecyclePass.objects.create(organization=org, started_at=now, run_by="maya")
    asked = []
    real = services.passes

    def passes(organization):
        asked.append(organization)
        return real(organization)

    monkeypatch.setattr(services, "passes", passes)
    assert [p.pk for p in real(org)] == [second.pk, first.pk]
    client.force_login(operators["viewer"])
    assert client.get("/orgs/acme/cache/policy/").status_code == 200
    client.logout()
    from api.models import ApiToken

    header = {"HTTP_AUTHORIZATION": f"Bearer {ApiToken.issue(operators['viewer'])[1]}"}
    body = client.get("/api/v1/orgs/acme/lifecycle/passes/", **header).json()
    assert [row["id"] for row in body["results"]] == [second.pk, first.pk]
    assert asked == [org, org]


# ---- the storage limit as typed --------------------------------------------------------


@pytest.mark.parametrize("text", ["0.5", "0.9 b", "0.0001 KB"])
def test_a_size_below_one_byte_is_refused_not_taken_for_no_limit(text):
    from retention.forms import parse_size

    with pytest.raises(ValueError, match="less than one byte; write 0 for no limit"):
        parse_size(text)


@pytest.mark.parametrize("text,size", [("0", 0), ("0.0 GB", 0), ("1.9 b", 1), ("0.5 KB", 512),
                                        ("1.1 TB", 1209462790553), ("123456789012345678", 123456789012345678)])
def test_sizes_are_exact(text, size):
    from retention.forms import parse_size

    assert parse_size(text) == size


def test_the_page_refuses_half_a_byte_and_changes_nothing(client, operators, org):
    from retention.models import StoragePolicy

    client.force_login(operators["maintainer"])
    resp = client.post("/orgs/acme/cache/policy/", {"storage_limit": "0.5", "unused_after_days": ""})
    assert resp.status_code == 400 and "less than one byte" in resp.content.decode()
    assert not StoragePolicy.objects.exists() and not AuditEntry.objects.exists()


# ---- the Policy page's preview -----------------------------------------------------------


def test_the_policy_page_says_when_its_steps_are_those_of_some_blobs_only(client, operators, org, monkeypatch):
    from dashboard import policy
    from tests.test_storage_policy import aged_blob

    services.set_storage_policy(org, "command", unused_after_days=5)
    for days in (10, 20, 30):
        aged_blob(org, f"unused {days}", 1000, days)
    client.force_login(operators["viewer"])
    page = client.get("/orgs/acme/cache/policy/").content.decode()
    assert page.count('class="step-title"') == 3 and 'id="preview-steps-partial"' not in page

    monkeypatch.setattr(policy, "PREVIEW_ITEMS", 1)
    monkeypatch.setattr(policy, "PREVIEW_STEPS", 1)
    page = client.get("/orgs/acme/cache/policy/").content.decode()
    assert page.count('class="step-title"') == 1
    assert "only those of the 1 blob listed" in page and "the other 2 blobs the pass would delete are not shown" in page
    assert 'id="preview-steps-more"' not in page

    monkeypatch.setattr(policy, "PREVIEW_ITEMS", 3)
    page = client.get("/orgs/acme/cache/policy/").content.decode()
    assert "More steps than these 1 use the blobs listed above" in page and 'id="preview-steps-partial"' not in page
