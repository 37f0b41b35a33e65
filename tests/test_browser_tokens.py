"""An operator manages engine tokens in a real browser against the real server."""

import re

import pytest
import requests
from django.core.management import call_command

from accounts.models import EngineToken
from tests.browser import browser_page, log_in
from tests.support import basic

# CI runs this in the embedded pass only (pytest.ini: once).
pytestmark = pytest.mark.once


@pytest.fixture
def static_files(transactional_db):
    call_command("collectstatic", interactive=False, verbosity=0)


@pytest.mark.django_db(transaction=True)
def test_maintainer_creates_uses_and_revokes_a_token(static_files, live_service, operators, org, tmp_path):
    with browser_page() as page:
        log_in(page, live_service.url, "maya", "pw-maya-123")
        page.wait_for_url(f"{live_service.url}/orgs/acme/")
        # The stylesheet is served (by the app itself, DEBUG off).
        assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(248, 249, 251)"
        page.click("nav >> text=Tokens")
        page.fill("#create-token input[name=label]", "browser-made")
        page.click("#create-token button[type=submit]")
        env = page.inner_text("#new-token-env")
        # The POST was answered with a redirect: reloading shows the list, not a second token.
        assert page.url == f"{live_service.url}/orgs/acme/tokens/"
        page.screenshot(path=str(tmp_path / "tokens.png"), full_page=True)
        value = re.search(r"TOKEN=(cwt_\w+)", env).group(1)
        assert f"URL={live_service.url}/magicache" in env

        # The token works for an engine.
        resp = requests.get(f"{live_service.url}/magicache/config", data=b'{"EngineID":"b1"}\n',
                            headers={"Authorization": basic(value), "Content-Type": "application/json"})
        assert resp.status_code == 200

        # Reloading the list never shows the value again; the row shows its prefix.
        page.goto(f"{live_service.url}/orgs/acme/tokens/")
        assert value not in page.content()
        prefix = value[:12]
        assert page.is_visible(f"text={prefix}…")

        page.click(f"a[aria-label='revoke {prefix}']")
        page.click("#confirm-revoke button[type=submit]")
        assert page.is_visible("text=Revoked")
        assert "revoked" in page.inner_text("#tokens tr.revoked")

    resp = requests.get(f"{live_service.url}/magicache/config", data=b'{"EngineID":"b1"}\n',
                        headers={"Authorization": basic(value), "Content-Type": "application/json"})
    assert resp.status_code == 401
    row = EngineToken.objects.get(label="browser-made")
    assert row.prefix == prefix and row.revoked and row.last_used_at is not None


@pytest.mark.django_db(transaction=True)
def test_viewer_sees_tokens_but_no_controls(static_files, live_service, operators, org):
    EngineToken.issue(org, label="existing")  # before the browser's event loop starts
    with browser_page() as page:
        log_in(page, live_service.url, "victor", "pw-victor-123")
        page.goto(f"{live_service.url}/orgs/acme/tokens/")
        assert page.is_visible("text=existing")
        assert page.locator("#create-token").count() == 0
        assert page.locator("button.danger").count() == 0


@pytest.mark.django_db(transaction=True)
def test_wrong_password_stays_on_login(live_service, operators):
    with browser_page() as page:
        log_in(page, live_service.url, "maya", "not-the-password")
        assert page.is_visible("text=Wrong user name or password.")
        assert "/login/" in page.url
