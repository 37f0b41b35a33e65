"""An operator makes an API token on the profile page, uses it, revokes it; the API docs
render in a real browser from this service's own files."""

import pytest
import requests
from django.core.management import call_command

from api.models import ApiToken
from tests.browser import browser_page, log_in

# CI runs this in the embedded pass only (pytest.ini: once).
pytestmark = pytest.mark.once


@pytest.fixture
def static_files(transactional_db):
    call_command("collectstatic", interactive=False, verbosity=0)


@pytest.mark.django_db(transaction=True)
def test_operator_creates_uses_and_revokes_an_api_token(static_files, live_service, operators, org, tmp_path):
    with browser_page() as page:
        log_in(page, live_service.url, "maya", "pw-maya-123")
        page.wait_for_url(f"{live_service.url}/orgs/acme/")
        page.click("header >> text=API tokens")
        page.fill("#create-api-token input[name=label]", "laptop")
        page.fill("#create-api-token input[name=expires_days]", "30")
        page.click("#create-api-token button[type=submit]")
        value = page.inner_text("#new-token-value").strip()
        page.screenshot(path=str(tmp_path / "api-tokens.png"), full_page=True)
        assert value.startswith("cwu_")
        answer = requests.get(f"{live_service.url}/api/v1/orgs/", headers={"Authorization": f"Bearer {value}"})
        assert answer.status_code == 200 and answer.json()["results"][0]["slug"] == "acme"

        page.reload()  # after the redirect: shows no value, creates nothing
        assert page.locator("#new-token-value").count() == 0
        assert page.locator("#api-tokens tbody tr").count() == 1

        page.click("text=Revoke…")
        page.click("#revoke-api-token button[type=submit]")
        page.wait_for_url(f"{live_service.url}/profile/tokens/")
        assert "revoked" in page.inner_text("#api-tokens")
        answer = requests.get(f"{live_service.url}/api/v1/orgs/", headers={"Authorization": f"Bearer {value}"})
        assert answer.status_code == 401
    # (The ORM is not for Playwright's event loop: checked once the browser is closed.)
    row = ApiToken.objects.get()
    assert row.label == "laptop" and row.revoked_at is not None and row.expires_at is not None


@pytest.mark.django_db(transaction=True)
def test_the_docs_render_offline(static_files, live_service, operators):
    with browser_page() as page:
        outside = []
        page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(live_service.url) else None)
        page.goto(f"{live_service.url}/api/v1/docs/")
        page.wait_for_selector("text=/api/v1/orgs/{slug}/steps/evict/")
        assert page.locator(".opblock").count() >= 15
        assert outside == []
