"""Django admin for organizations, engine tokens and engines."""

import logging
import re

import pytest

from accounts.models import Engine, EngineToken
from tests.support import engine_request


@pytest.mark.django_db
class TestTokenAdmin:
    def test_adding_a_token_shows_its_value_once(self, admin_client, org, client):
        resp = admin_client.post(
            "/admin/accounts/enginetoken/add/",
            {"organization": org.pk, "label": "from admin", "read_only": "on"},
            follow=True,
        )
        assert resp.status_code == 200
        shown = re.search(r"(cwt_[A-Za-z0-9]+)", resp.content.decode())
        assert shown, "the new token's value is shown after adding it"
        token = EngineToken.objects.get()
        assert token.read_only and token.label == "from admin"
        assert EngineToken.objects.find(shown.group(1)) == token
        assert engine_request(client, "GET", "/magicache/config", token=shown.group(1),
                              body={"EngineID": "x"}).status_code == 200
        change_page = admin_client.get(f"/admin/accounts/enginetoken/{token.pk}/change/").content.decode()
        assert shown.group(1) not in change_page

    def test_list_shows_prefix_org_and_state(self, admin_client, org):
        row, _ = EngineToken.issue(org, label="listed")
        page = admin_client.get("/admin/accounts/enginetoken/").content.decode()
        assert row.prefix in page and "acme" in page

    def test_revoke_action(self, admin_client, org):
        row, value = EngineToken.issue(org)
        admin_client.post("/admin/accounts/enginetoken/",
                          {"action": "revoke_tokens", "_selected_action": [row.pk]})
        assert EngineToken.objects.find(value) is None

    def test_pages_need_staff(self, client, org):
        resp = client.get("/admin/accounts/enginetoken/")
        assert resp.status_code == 302 and "/admin/login/" in resp["Location"]

    def test_org_and_engine_pages(self, admin_client, org):
        Engine.objects.create(organization=org, engine_id="engine-xyz")
        assert "engine-xyz" in admin_client.get("/admin/accounts/engine/").content.decode()
        assert admin_client.get(f"/admin/accounts/organization/{org.pk}/change/").status_code == 200


@pytest.mark.django_db
def test_one_log_line_per_engine_call(client, token, caplog):
    with caplog.at_level(logging.INFO, logger="cacheweb.engine"):
        engine_request(client, "GET", "/magicache/config", token=token, body={"EngineID": "e7"})
        engine_request(client, "GET", "/magicache/config", body={"EngineID": "e8"})
    lines = [r.getMessage() for r in caplog.records if r.name == "cacheweb.engine"]
    assert len(lines) == 2
    assert "org=acme" in lines[0] and "engine=e7" in lines[0] and "endpoint=config" in lines[0]
    assert "status=200" in lines[0] and "duration_ms=" in lines[0]
    assert "org=-" in lines[1] and "status=401" in lines[1]
