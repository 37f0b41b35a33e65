"""The audit log: an entry for every operator action, whichever way it was made (dashboard,
API, Django admin, management commands) and for the storage policy's deletions; the page
and the API with their filters; pruning."""

import io
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from accounts.models import Engine, EngineToken
from activity.models import Activity
from api.models import ApiToken
from audit import services as audit
from audit import tasks
from audit.models import Action, ActorKind, AuditEntry
from blobs.models import Blob
from mounts.models import CacheMount
from records.models import Record
from tests.cache_rows import a_blob, a_layer, a_snapshot

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("builtin", "fresh_use_counts")]
PAGE = "/orgs/acme/audit/"
API = "/api/v1/orgs/acme/audit/"


def bearer(user, **fields):
    return {"HTTP_AUTHORIZATION": f"Bearer {ApiToken.issue(user, **fields)[1]}"}


def only_entry(**filters):
    [entry] = AuditEntry.objects.filter(**filters)
    return entry


def a_step(org, name, size):
    digest = a_blob(org, name, size)
    layer = a_layer(org, digest, size)
    return Record.objects.get(results__chain_layers__layer=layer), digest


def a_mount(org, size):
    mount = CacheMount.objects.create(organization=org, name="go-mod")
    digest = a_blob(org, "mount blob", size)
    a_snapshot(mount, digest, size)
    return mount, digest


def counters(org):
    return {(name, label): value for name, label, value in Activity.objects.filter(organization=org).values_list(
        "name", "label", "value")}


# ---- evictions -------------------------------------------------------------------------


def test_dashboard_evictions_are_audited_once_each(client, operators, org, django_capture_on_commit_callbacks):
    maya = operators["maintainer"]
    client.force_login(maya)
    loose = a_blob(org, "loose", 300)
    record, step_blob = a_step(org, "step", 500)
    mount, mount_blob = a_mount(org, 700)
    with django_capture_on_commit_callbacks(execute=True):
        assert client.post(f"/orgs/acme/cache/blobs/{loose}/evict").status_code == 302
        assert client.post(f"/orgs/acme/cache/steps/{record.pk}/evict").status_code == 302
        assert client.post(f"/orgs/acme/cache/mounts/{mount.pk}/evict").status_code == 302
    assert not Blob.objects.filter(digest__in=[loose, step_blob, mount_blob]).exists()
    blob = only_entry(action=Action.BLOB_EVICTED)
    assert (blob.user, blob.actor_kind, blob.target, blob.bytes_freed) == (maya, ActorKind.USER, loose, 300)
    step = only_entry(action=Action.STEPS_EVICTED)
    assert step.bytes_freed == 500 and step.details["blobs"] == [step_blob] and step.details["records"] == [record.pk]
    evicted_mount = only_entry(action=Action.MOUNT_EVICTED)
    assert evicted_mount.bytes_freed == 700 and "go-mod" in evicted_mount.target
    assert AuditEntry.objects.count() == 3
    assert counters(org) == {("evictions", "user"): 3, ("evicted_bytes", "user"): 1500}


def test_api_evictions_are_audited(client, operators, org):
    auth = bearer(operators["maintainer"])
    loose = a_blob(org, "loose", 300)
    record, _ = a_step(org, "step", 500)
    mount, _ = a_mount(org, 700)
    assert client.delete(f"/api/v1/orgs/acme/blobs/{loose}/", **auth).status_code == 200
    assert client.delete(f"/api/v1/orgs/acme/steps/{record.pk}/", **auth).status_code == 200
    assert client.post(f"/api/v1/orgs/acme/mounts/{mount.pk}/evict/", **auth).status_code == 200
    assert sorted(AuditEntry.objects.values_list("action", "bytes_freed", "actor_name")) == [
        (Action.BLOB_EVICTED, 300, "maya"), (Action.MOUNT_EVICTED, 700, "maya"), (Action.STEPS_EVICTED, 500, "maya"),
    ]


def test_a_dry_bulk_eviction_is_not_audited(client, operators, org):
    a_step(org, "step", 500)
    body = {"search": "", "used": "no", "dry_run": True}
    resp = client.post("/api/v1/orgs/acme/steps/evict/", body, content_type="application/json",
                       **bearer(operators["maintainer"]))
    assert resp.status_code in (200, 400)
    assert not AuditEntry.objects.exists()


def test_admin_evictions_and_edits_are_audited(admin_client, admin_user, org):
    loose = a_blob(org, "loose", 300)
    record, _ = a_step(org, "step", 500)
    blob = Blob.objects.get(digest=loose)
    result = record.results.get()
    assert admin_client.post(f"/admin/blobs/blob/{blob.pk}/delete/", {"post": "yes"}).status_code == 302
    assert admin_client.post(f"/admin/records/result/{result.pk}/delete/", {"post": "yes"}).status_code == 302
    # Evictions are audited by the services, once: no second "deleted in admin" entry.
    assert sorted(AuditEntry.objects.values_list("action", flat=True)) == [Action.BLOB_EVICTED, Action.STEPS_EVICTED]
    assert set(AuditEntry.objects.values_list("user", flat=True)) == {admin_user.pk}
    # Plain admin edits of the organization's rows.
    engine = Engine.objects.create(organization=org, engine_id="e1")
    assert admin_client.post(f"/admin/accounts/engine/{engine.pk}/delete/", {"post": "yes"}).status_code == 302
    deleted = only_entry(action=Action.ADMIN_DELETED)
    assert deleted.organization == org and "e1" in deleted.target and deleted.details["model"] == "accounts.Engine"
    row, _ = EngineToken.issue(org, label="old")
    resp = admin_client.post(
        f"/admin/accounts/enginetoken/{row.pk}/change/", {"label": "renamed", "revoked_at_0": "", "revoked_at_1": ""}
    )
    assert resp.status_code == 302, resp.content.decode()[:2000]
    changed = only_entry(action=Action.ADMIN_CHANGED)
    assert changed.organization == org and changed.user == admin_user and "Label" in changed.details["message"]


def test_admin_created_token_is_audited_once(admin_client, admin_user, org):
    resp = admin_client.post("/admin/accounts/enginetoken/add/", {
        "organization": org.pk, "label": "from admin", "revoked_at_0": "", "revoked_at_1": ""})
    assert resp.status_code == 302
    entry = only_entry()
    assert entry.action == Action.TOKEN_CREATED and entry.user == admin_user and entry.organization == org


# ---- tokens and settings ---------------------------------------------------------------


def test_token_lifecycle_is_audited_everywhere(client, operators, org):
    maya = operators["maintainer"]
    client.force_login(maya)
    client.post("/orgs/acme/tokens/", {"label": "dash"})
    dash = EngineToken.objects.get(label="dash")
    client.post(f"/orgs/acme/tokens/{dash.pk}/revoke")
    auth = bearer(maya)
    made = client.post("/api/v1/orgs/acme/engine-tokens/", {"label": "api"}, content_type="application/json", **auth)
    client.delete(f"/api/v1/orgs/acme/engine-tokens/{made.json()['id']}/", **auth)
    out = io.StringIO()
    call_command("createtoken", "acme", "--label", "cmd", stdout=out)
    cmd = EngineToken.objects.get(label="cmd")
    call_command("revoketoken", cmd.prefix, stdout=io.StringIO())
    rows = list(AuditEntry.objects.filter(organization=org).order_by("pk").values_list("action", "actor_kind", "actor_name"))
    assert rows == [
        (Action.TOKEN_CREATED, "user", "maya"), (Action.TOKEN_REVOKED, "user", "maya"),
        (Action.TOKEN_CREATED, "user", "maya"), (Action.TOKEN_REVOKED, "user", "maya"),
        (Action.TOKEN_CREATED, "command", "createtoken"), (Action.TOKEN_REVOKED, "command", "revoketoken"),
    ]
    # Revoking twice is one revocation.
    client.post(f"/orgs/acme/tokens/{dash.pk}/revoke")
    assert AuditEntry.objects.filter(action=Action.TOKEN_REVOKED).count() == 3


def test_personal_api_tokens_are_audited(client, operators):
    maya = operators["maintainer"]
    client.force_login(maya)
    resp = client.post("/profile/tokens/", {"label": "mine", "expires_days": ""})
    assert resp.status_code == 302
    row = ApiToken.objects.get(label="mine")
    client.post(f"/profile/tokens/{row.pk}/revoke")
    call_command("createapitoken", "victor", stdout=io.StringIO())
    rows = list(AuditEntry.objects.order_by("pk").values_list("organization", "action", "actor_name"))
    assert rows == [(None, Action.API_TOKEN_CREATED, "maya"), (None, Action.API_TOKEN_REVOKED, "maya"),
                    (None, Action.API_TOKEN_CREATED, "createapitoken")]
    assert AuditEntry.objects.order_by("pk").last().details["owner"] == "victor"


def test_settings_changes_are_audited(client, operators, org):
    client.force_login(operators["maintainer"])
    fields = {"name": "Acme", "import_period": org.import_period, "export_period": org.export_period,
              "export_timeout": org.export_timeout}
    assert client.post("/orgs/acme/", {**fields, "import_period": 99}).status_code == 302
    entry = only_entry()
    assert entry.action == Action.SETTINGS_CHANGED and entry.details["changed"]["import_period"]["to"] == 99
    assert set(entry.details["changed"]) == {"name", "import_period"}, entry.details
    client.patch("/api/v1/orgs/acme/", {"export_timeout": 77}, content_type="application/json",
                 **bearer(operators["maintainer"]))
    latest = AuditEntry.objects.first()
    assert latest.details["changed"] == {"export_timeout": {"from": org.export_timeout, "to": 77}}
    # Nothing changed: nothing audited.
    client.post("/orgs/acme/", {**fields, "import_period": 99, "export_timeout": 77})
    assert AuditEntry.objects.count() == 2, list(AuditEntry.objects.values_list("details", flat=True))


# ---- the page and the API --------------------------------------------------------------


@pytest.fixture
def log(org, operators, other_org):
    audit.record(org, operators["maintainer"], Action.BLOB_EVICTED, target="sha256:aa", bytes_freed=10, evicted=1)
    audit.record(org, operators["viewer"], Action.SETTINGS_CHANGED, target="name")
    audit.record(org, audit.POLICY, Action.LIFECYCLE_DELETED, target="3 unreferenced blobs", bytes_freed=30)
    audit.record(other_org, audit.POLICY, Action.LIFECYCLE_DELETED, target="elsewhere")


def test_page_lists_and_filters(client, operators, org, log):
    client.force_login(operators["viewer"])
    page = client.get(PAGE).content.decode()
    assert page.count('<tr class="audit-') == 3 and "elsewhere" not in page
    assert page.index("3 unreferenced blobs") < page.index("sha256:aa")  # newest first
    only = client.get(PAGE, {"kind": "blob_evicted"}).content.decode()
    assert only.count('<tr class="audit-') == 1 and "sha256:aa" in only
    by = client.get(PAGE, {"user": "victor"}).content.decode()
    assert by.count('<tr class="audit-') == 1 and "audit-settings_changed" in by
    policy = client.get(PAGE, {"actor": "policy"}).content.decode()
    assert policy.count('<tr class="audit-') == 1 and "storage policy" in policy
    for bad in ({"kind": "nope"}, {"actor": "robot"}, {"user": "olga"}):
        resp = client.get(PAGE, bad)
        assert resp.status_code == 400 and 'id="filter-errors"' in resp.content.decode()
        assert '<tr class="audit-' not in resp.content.decode()


def test_page_pages(client, operators, org):
    for n in range(55):
        audit.record(org, audit.POLICY, Action.LIFECYCLE_DELETED, target=f"pass {n}")
    client.force_login(operators["viewer"])
    first = client.get(PAGE, {"actor": "policy"}).content.decode()
    assert first.count('<tr class="audit-') == 50 and "page=2" in first and "actor=policy&amp;page=2" in first
    assert client.get(PAGE, {"actor": "policy", "page": 2}).content.decode().count('<tr class="audit-') == 5


def test_page_roles(client, operators, org, log):
    client.force_login(operators["outsider"])
    assert client.get(PAGE).status_code == 404
    client.force_login(operators["viewer"])
    assert client.get(PAGE).status_code == 200
    assert client.post(PAGE).status_code == 405


def test_api_lists_filters_and_refuses_bad_filters(client, operators, org, log):
    auth = bearer(operators["viewer"])
    body = client.get(API, **auth).json()
    assert body["count"] == 3
    assert [e["action"] for e in body["results"]] == ["lifecycle_deleted", "settings_changed", "blob_evicted"]
    assert body["results"][2]["user"] == "maya" and body["results"][2]["bytes_freed"] == 10
    assert client.get(API, {"user": "maya"}, **auth).json()["count"] == 1
    assert client.get(API, {"kind": "lifecycle_deleted", "actor": "policy"}, **auth).json()["count"] == 1
    bad = client.get(API, {"kind": "x", "actor": "y"}, **auth)
    assert bad.status_code == 400 and set(bad.json()["fields"]) == {"kind", "actor"}
    assert client.get(API, {"page": 9}, **auth).status_code == 400
    assert client.get(API, **bearer(operators["outsider"])).status_code == 404


def test_old_entries_are_pruned(org, operators, settings):
    settings.AUDIT_DAYS = 10
    old = audit.record(org, audit.POLICY, Action.LIFECYCLE_DELETED)
    AuditEntry.objects.filter(pk=old.pk).update(at=timezone.now() - timedelta(days=11))
    kept = audit.record(org, audit.POLICY, Action.LIFECYCLE_DELETED)
    tasks.prune()
    assert list(AuditEntry.objects.all()) == [kept]


def test_prune_is_scheduled_daily():
    from cacheweb.celery import app

    assert app.conf.beat_schedule["audit-prune"] == {"task": "audit.prune", "schedule": 86400.0}


def test_entries_outlive_their_user(org, operators):
    entry = audit.record(org, operators["viewer"], Action.SETTINGS_CHANGED)
    operators["viewer"].delete()
    entry.refresh_from_db()
    assert entry.user is None and entry.actor == "victor"


def test_admin_mount_switch_actions_are_audited(admin_client, admin_user, org):
    from mounts.models import MountSwitch

    mount = CacheMount.objects.create(organization=org, name="go-mod")
    admin_client.post("/admin/mounts/cachemount/", {"action": "switch_off", "_selected_action": [mount.pk]})
    admin_client.post("/admin/mounts/cachemount/", {"action": "switch_off", "_selected_action": [mount.pk]})
    mount.refresh_from_db()
    assert mount.switch == MountSwitch.OFF
    entry = only_entry()  # the second changed nothing
    assert entry.action == Action.ADMIN_CHANGED and entry.organization == org and entry.user == admin_user
    assert entry.details["message"] == "Changed switch to off."
