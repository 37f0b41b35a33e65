"""Dashboard pages for an organization, its engines and tokens, scoped per operator."""

import re

import pytest

from accounts.models import Engine, EngineToken, Organization
from tests.support import engine_request

PAGES = ["/orgs/acme/", "/orgs/acme/engines/", "/orgs/acme/tokens/"]


@pytest.mark.django_db
class TestScoping:
    @pytest.mark.parametrize("path", PAGES)
    def test_anonymous_is_sent_to_login(self, client, org, path):
        resp = client.get(path)
        assert resp.status_code == 302 and resp["Location"].startswith("/login/")

    @pytest.mark.parametrize("path", PAGES)
    def test_outsider_gets_404(self, client, operators, path):
        client.force_login(operators["outsider"])
        assert client.get(path).status_code == 404

    @pytest.mark.parametrize("path", PAGES)
    def test_members_see_pages(self, client, operators, path):
        for who in ("maintainer", "viewer"):
            client.force_login(operators[who])
            assert client.get(path).status_code == 200

    def test_superuser_sees_every_org(self, admin_client, org, other_org):
        page = admin_client.get("/").content.decode()
        assert "acme" in page and "globex" in page

    def test_home_lists_only_own_orgs(self, client, operators, other_org):
        client.force_login(operators["viewer"])
        resp = client.get("/")
        assert resp.status_code == 302 and resp["Location"] == "/orgs/acme/"

    def test_unknown_org_is_404(self, admin_client, org):
        assert admin_client.get("/orgs/nope/").status_code == 404


@pytest.mark.django_db
class TestTokens:
    def test_maintainer_creates_token_shown_once(self, client, operators, org):
        client.force_login(operators["maintainer"])
        resp = client.post("/orgs/acme/tokens/", {"label": "ci", "read_only": "on"})
        # Redirected after the POST: reloading the page it lands on creates nothing.
        assert resp.status_code == 302 and resp["Location"] == "/orgs/acme/tokens/"
        page = client.get(resp["Location"]).content.decode()
        value = re.search(r"_EXPERIMENTAL_DAGGER_CACHESERVICE_TOKEN=(cwt_\w+)", page).group(1)
        assert "_EXPERIMENTAL_DAGGER_CACHESERVICE_URL=http://testserver/magicache" in page
        token = EngineToken.objects.find(value)
        assert token.organization == org and token.read_only and token.label == "ci"
        assert value not in client.get("/orgs/acme/tokens/").content.decode()
        assert EngineToken.objects.count() == 1

    def test_bad_label_is_400_and_creates_nothing(self, client, operators, org):
        client.force_login(operators["maintainer"])
        resp = client.post("/orgs/acme/tokens/", {"label": "x" * 201})
        assert resp.status_code == 400 and "at most 200" in resp.content.decode()
        assert not EngineToken.objects.exists()

    def test_viewer_cannot_create_or_revoke(self, client, operators, org):
        row, value = EngineToken.issue(org)
        client.force_login(operators["viewer"])
        assert "Create a token" not in client.get("/orgs/acme/tokens/").content.decode()
        assert client.post("/orgs/acme/tokens/", {"label": "x"}).status_code == 403
        assert client.post(f"/orgs/acme/tokens/{row.pk}/revoke").status_code == 403
        assert EngineToken.objects.count() == 1
        assert EngineToken.objects.find(value) is not None

    def test_maintainer_revokes(self, client, operators, org):
        row, value = EngineToken.issue(org)
        client.force_login(operators["maintainer"])
        resp = client.post(f"/orgs/acme/tokens/{row.pk}/revoke", follow=True)
        assert "Revoked" in resp.content.decode()
        assert EngineToken.objects.find(value) is None
        assert engine_request(client, "GET", "/magicache/config", token=value, body={}).status_code == 401

    def test_cannot_revoke_another_orgs_token(self, client, operators, other_org):
        row, value = EngineToken.issue(other_org)
        client.force_login(operators["maintainer"])
        assert client.post(f"/orgs/acme/tokens/{row.pk}/revoke").status_code == 404
        assert EngineToken.objects.find(value) is not None

    def test_revoke_asks_first(self, client, operators, org):
        row, value = EngineToken.issue(org, label="ci")
        client.force_login(operators["maintainer"])
        tokens_page = client.get("/orgs/acme/tokens/").content.decode()
        assert f'href="/orgs/acme/tokens/{row.pk}/revoke"' in tokens_page
        resp = client.get(f"/orgs/acme/tokens/{row.pk}/revoke")
        assert resp.status_code == 200 and 'id="confirm-revoke"' in resp.content.decode()
        assert EngineToken.objects.find(value) is not None
        client.force_login(operators["viewer"])
        assert client.get(f"/orgs/acme/tokens/{row.pk}/revoke").status_code == 403
        assert client.put(f"/orgs/acme/tokens/{row.pk}/revoke").status_code == 405

    def test_outsider_cannot_create(self, client, operators, org):
        client.force_login(operators["outsider"])
        assert client.post("/orgs/acme/tokens/", {"label": "x"}).status_code == 404
        assert not EngineToken.objects.exists()


@pytest.mark.django_db
class TestOverview:
    def test_lists_engines(self, client, operators, org, other_org):
        Engine.objects.create(organization=org, engine_id="engine-of-acme")
        Engine.objects.create(organization=other_org, engine_id="engine-of-globex")
        client.force_login(operators["viewer"])
        page = client.get("/orgs/acme/").content.decode()
        assert "engine-of-acme" in page and "engine-of-globex" not in page

    def test_maintainer_changes_periods(self, client, operators, org):
        client.force_login(operators["maintainer"])
        resp = client.post("/orgs/acme/", {"name": "Acme", "import_period": 30, "export_period": 60,
                                           "export_timeout": 120})
        assert resp.status_code == 302
        org.refresh_from_db()
        assert (org.import_period, org.export_period, org.export_timeout) == (30, 60, 120)

    def test_zero_period_is_refused(self, client, operators, org):
        client.force_login(operators["maintainer"])
        resp = client.post("/orgs/acme/", {"name": "Acme", "import_period": 0, "export_period": 60,
                                           "export_timeout": 120})
        assert resp.status_code == 200
        assert Organization.objects.get(slug="acme").import_period != 0

    def test_viewer_cannot_change_periods(self, client, operators, org):
        client.force_login(operators["viewer"])
        resp = client.post("/orgs/acme/", {"name": "x", "import_period": 30, "export_period": 60,
                                           "export_timeout": 120})
        assert resp.status_code == 403
        org.refresh_from_db()
        assert org.import_period != 30


@pytest.mark.django_db
def test_period_beyond_a_month_is_refused(client, operators, org):
    client.force_login(operators["maintainer"])
    resp = client.post("/orgs/acme/", {"name": "Acme", "import_period": 9223372036854775807,
                                       "export_period": 60, "export_timeout": 120})
    assert resp.status_code == 200
    org.refresh_from_db()
    assert org.import_period != 9223372036854775807
