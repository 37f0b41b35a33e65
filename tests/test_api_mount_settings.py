"""/api/v1/: a mount's switch and size limit, and the organization's mount policy, per
role, with bad input refused as the dashboard's forms refuse it."""

import pytest

from api.models import ApiToken
from mounts.models import CacheMount, MountPolicy, MountSwitch
from mounts.services import synced_mount_config

pytestmark = pytest.mark.django_db
POLICY = "/api/v1/orgs/acme/mount-policy/"


@pytest.fixture
def as_(operators):
    def header(role, **fields):
        return {"HTTP_AUTHORIZATION": f"Bearer {ApiToken.issue(operators[role], **fields)[1]}"}

    return header


@pytest.fixture
def mounts(org, other_org):
    return {
        "go": CacheMount.objects.create(organization=org, name="go-mod"),
        "npm": CacheMount.objects.create(organization=org, name="npm cache"),
        "theirs": CacheMount.objects.create(organization=other_org, name="go-mod"),
    }


def patch(client, path, body, header):
    return client.patch(path, body, content_type="application/json", **header)


def url(mount):
    return f"/api/v1/orgs/{mount.organization.slug}/mounts/{mount.pk}/"


def synced_names(org):
    return [entry["Name"] for entry in synced_mount_config(None, org)]


def test_a_maintainer_switches_a_mount_off_and_engines_stop_syncing_it(client, as_, org, mounts):
    assert synced_names(org) == ["go-mod", "npm cache"]
    answer = patch(client, url(mounts["go"]), {"switch": "off"}, as_("maintainer"))
    assert answer.status_code == 200, answer.content
    assert answer.json()["switch"] == "off" and answer.json()["synced"] is False
    assert "snapshots" in answer.json()
    assert synced_names(org) == ["npm cache"]
    answer = patch(client, url(mounts["go"]), {"size_limit": 1000}, as_("maintainer"))
    mounts["go"].refresh_from_db()
    assert (mounts["go"].switch, mounts["go"].size_limit) == (MountSwitch.OFF, 1000)
    assert answer.json()["size_limit"] == 1000 and answer.json()["effective_size_limit"] == 1000
    patch(client, url(mounts["go"]), {"switch": "policy", "size_limit": None}, as_("maintainer"))
    mounts["go"].refresh_from_db()
    assert (mounts["go"].switch, mounts["go"].size_limit) == (MountSwitch.POLICY, None)
    # Viewers read the same fields.
    assert client.get(url(mounts["go"]), **as_("viewer")).json()["switch"] == "policy"


def test_mount_switch_per_role(client, as_, mounts):
    body = {"switch": "off"}
    assert patch(client, url(mounts["go"]), body, as_("outsider")).status_code == 404
    assert patch(client, url(mounts["theirs"]), body, as_("maintainer")).status_code == 404
    assert patch(client, "/api/v1/orgs/acme/mounts/999999/", body, as_("maintainer")).status_code == 404
    viewer = patch(client, url(mounts["go"]), body, as_("viewer"))
    assert viewer.status_code == 403 and viewer.json()["error"]
    read_only = patch(client, url(mounts["go"]), body, as_("maintainer", read_only=True))
    assert read_only.status_code == 403 and "read-only" in read_only.json()["error"]
    assert client.patch(url(mounts["go"]), body, content_type="application/json").status_code == 401
    assert CacheMount.objects.filter(switch=MountSwitch.OFF).count() == 0


@pytest.mark.parametrize(
    "body,field",
    [
        ({"switch": "sometimes"}, "switch"),
        ({"switch": True}, "switch"),
        ({"switch": None}, "switch"),
        ({"size_limit": -1}, "size_limit"),
        ({"size_limit": "1000"}, "size_limit"),
        ({"size_limit": 1.5}, "size_limit"),
        ({"size_limit": True}, "size_limit"),
        ({"size_limit": 2**63}, "size_limit"),
        ({"name": "renamed"}, "name"),
    ],
)
def test_bad_mount_settings_are_400_naming_the_field(client, as_, mounts, body, field):
    answer = patch(client, url(mounts["go"]), body, as_("maintainer"))
    assert answer.status_code == 400, answer.content
    assert field in answer.json()["fields"]
    mounts["go"].refresh_from_db()
    assert (mounts["go"].name, mounts["go"].switch, mounts["go"].size_limit) == ("go-mod", "policy", None)


# ---- the policy --------------------------------------------------------------------------


def test_reading_the_default_policy_creates_nothing(client, as_, org, settings):
    answer = client.get(POLICY, **as_("viewer"))
    assert answer.status_code == 200
    assert answer.json() == {
        "mode": "all", "patterns": [], "size_limit": None, "effective_size_limit": settings.MOUNT_ORG_SIZE_LIMIT,
    }
    assert not MountPolicy.objects.exists()
    assert client.get(POLICY, **as_("outsider")).status_code == 404


def test_a_maintainer_limits_syncing_to_patterns(client, as_, org, mounts):
    answer = patch(client, POLICY, {"mode": "patterns", "patterns": ["go-*", " pnpm-? "]}, as_("maintainer"))
    assert answer.status_code == 200, answer.content
    assert answer.json()["patterns"] == ["go-*", "pnpm-?"]
    assert synced_names(org) == ["go-mod"]
    # A mount switched on keeps its switch.
    patch(client, url(mounts["npm"]), {"switch": "on"}, as_("maintainer"))
    assert synced_names(org) == ["go-mod", "npm cache"]
    answer = patch(client, POLICY, {"size_limit": 0}, as_("maintainer"))
    assert answer.json()["mode"] == "patterns" and answer.json()["effective_size_limit"] == 0
    policy = MountPolicy.objects.get(organization=org)
    assert (policy.mode, policy.pattern_list(), policy.size_limit) == ("patterns", ["go-*", "pnpm-?"], 0)


def test_policy_writes_per_role(client, as_, org):
    body = {"mode": "patterns", "patterns": ["go-*"]}
    assert patch(client, POLICY, body, as_("outsider")).status_code == 404
    assert patch(client, "/api/v1/orgs/globex/mount-policy/", body, as_("maintainer")).status_code == 404
    assert patch(client, POLICY, body, as_("viewer")).status_code == 403
    assert patch(client, POLICY, body, as_("maintainer", read_only=True)).status_code == 403
    assert not MountPolicy.objects.exists()


@pytest.mark.parametrize(
    "body,field",
    [
        ({"mode": "some"}, "mode"),
        ({"mode": 1}, "mode"),
        ({"mode": "patterns"}, "patterns"),  # and no pattern to match
        ({"mode": "patterns", "patterns": []}, "patterns"),
        ({"patterns": "go-*"}, "patterns"),
        ({"patterns": ["go-*", 5]}, "patterns"),
        ({"patterns": ["go-*\npnpm"]}, "patterns"),
        ({"patterns": ["x" * 256]}, "patterns"),
        ({"patterns": [f"p{i}" for i in range(101)]}, "patterns"),
        ({"patterns": ["nul\x00"]}, "patterns"),
        ({"size_limit": -5}, "size_limit"),
        ({"size_limit": "5"}, "size_limit"),
        ({"organization": "globex"}, "organization"),
    ],
)
def test_bad_policies_are_400_and_change_nothing(client, as_, org, body, field):
    answer = patch(client, POLICY, body, as_("maintainer"))
    assert answer.status_code == 400, answer.content
    assert field in answer.json()["fields"]
    assert not MountPolicy.objects.exists()


@pytest.mark.parametrize("raw", ["[1]", '"text"', "{not json"])
def test_a_body_that_is_not_an_object_is_400(client, as_, mounts, raw):
    for path in (POLICY, url(mounts["go"])):
        answer = client.patch(path, raw, content_type="application/json", **as_("maintainer"))
        assert answer.status_code == 400 and answer.json()["error"]


def test_the_api_refuses_what_the_dashboard_refuses(client, as_, operators, org, mounts):
    """One form: the dashboard's mount pages answer the same for the same value."""
    client.force_login(operators["maintainer"])
    page = client.post("/orgs/acme/cache/mounts/", {"mode": "patterns", "patterns": ""})
    assert page.status_code == 200
    dashboard_error = page.context["form"].errors["patterns"]
    page = client.post(f"/orgs/acme/cache/mounts/{mounts['go'].pk}/", {"switch": "sometimes"})
    switch_error = page.context["form"].errors["switch"]
    client.logout()
    answer = patch(client, POLICY, {"mode": "patterns"}, as_("maintainer"))
    assert answer.json()["fields"]["patterns"] == " ".join(dashboard_error)
    answer = patch(client, url(mounts["go"]), {"switch": "sometimes"}, as_("maintainer"))
    assert answer.json()["fields"]["switch"] == " ".join(switch_error)


def test_the_dashboard_saves_both_for_maintainers_only(client, operators, org, mounts):
    client.force_login(operators["viewer"])
    page = client.get(f"/orgs/acme/cache/mounts/{mounts['go'].pk}/")
    assert page.status_code == 200 and b'id="mount-settings"' not in page.content
    assert client.post(f"/orgs/acme/cache/mounts/{mounts['go'].pk}/", {"switch": "off"}).status_code == 403
    assert client.post("/orgs/acme/cache/mounts/", {"mode": "patterns", "patterns": "go-*"}).status_code == 403
    client.force_login(operators["maintainer"])
    answer = client.post(f"/orgs/acme/cache/mounts/{mounts['go'].pk}/", {"switch": "off", "size_limit": ""})
    assert answer.status_code == 302
    answer = client.post("/orgs/acme/cache/mounts/", {"mode": "patterns", "patterns": "go-*\n\nnpm*", "size_limit": "10"})
    assert answer.status_code == 302
    mounts["go"].refresh_from_db()
    assert mounts["go"].switch == MountSwitch.OFF
    assert MountPolicy.objects.get(organization=org).pattern_list() == ["go-*", "npm*"]
    assert synced_names(org) == ["npm cache"]


def test_mount_settings_are_audited_once_per_change_from_the_api_and_the_dashboard(client, as_, operators, org, mounts):
    from audit.models import Action, AuditEntry

    patch(client, url(mounts["go"]), {"switch": "off"}, as_("maintainer"))
    patch(client, url(mounts["go"]), {"switch": "off"}, as_("maintainer"))  # no change: no entry
    patch(client, POLICY, {"mode": "patterns", "patterns": ["go-*"]}, as_("maintainer"))
    client.force_login(operators["maintainer"])
    client.post(f"/orgs/acme/cache/mounts/{mounts['npm'].pk}/", {"switch": "on", "size_limit": "5"})
    entries = list(AuditEntry.objects.filter(organization=org).order_by("pk"))
    assert [(e.action, e.user_id, e.target) for e in entries] == [
        (Action.SETTINGS_CHANGED, operators["maintainer"].pk, "mount 'go-mod': switch 'policy' → 'off'"),
        (Action.SETTINGS_CHANGED, operators["maintainer"].pk, "mount policy: mode 'all' → 'patterns', patterns '' → 'go-*'"),
        (Action.SETTINGS_CHANGED, operators["maintainer"].pk, "mount 'npm cache': switch 'policy' → 'on', size_limit None → 5"),
    ]
