"""A maintainer sets the organization's storage policy, sees what the next pass would
delete, and reads the change in the audit log, in a real browser against the real server."""

import os
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from blobs.models import Blob
from tests.browser import browser_page, log_in
from tests.cache_rows import a_blob, a_layer

# CI runs this in the embedded pass only (pytest.ini: once).
pytestmark = pytest.mark.once
SHOTS = os.environ.get("CACHEWEB_SCREENSHOTS", "")


@pytest.fixture
def static_files(transactional_db):
    call_command("collectstatic", interactive=False, verbosity=0)


def shoot(page, name):
    if SHOTS:
        for width in (1280, 390):
            page.set_viewport_size({"width": width, "height": 900})
            page.screenshot(path=os.path.join(SHOTS, f"{name}-{width}.png"), full_page=True)
        page.set_viewport_size({"width": 1280, "height": 900})


@pytest.mark.django_db(transaction=True)
def test_policy_page_and_audit_log(static_files, live_service, operators, org, settings):
    old = a_blob(org, "old layer", 4096)
    a_layer(org, old, 4096)
    fresh = a_blob(org, "fresh layer", 2048)
    a_layer(org, fresh, 2048)
    then = timezone.now() - timedelta(days=20)
    Blob.objects.filter(digest=old).update(created_at=then, verified_at=then, last_used_at=then)
    Blob.objects.filter(digest=fresh).update(last_used_at=timezone.now())
    with browser_page() as page:
        log_in(page, live_service.url, "maya", "pw-maya-123")
        page.wait_for_url(f"{live_service.url}/orgs/acme/")
        page.click("nav >> text=Cache")
        page.click(".subnav >> text=Policy")
        assert page.inner_text("#preview") .startswith("What the next pass would delete")
        page.fill("#policy-form input[name=storage_limit]", "1 GB")
        page.fill("#policy-form input[name=unused_after_days]", "14")
        page.click("#policy-form button[type=submit]")
        assert "Storage policy saved" in page.inner_text(".messages")
        assert page.inner_text("#rules-words") == (
            "Blobs not downloaded for 14 days are evicted; above 1.0 GB the least recently used blobs go first."
        )
        preview = page.inner_text("#preview-blobs")
        assert old in preview and fresh not in preview
        assert page.locator("#preview-steps tbody tr").count() == 1
        shoot(page, "policy")

        page.click("nav >> text=Audit")
        rows = page.locator("#audit tbody tr")
        assert rows.count() == 1
        assert "storage policy changed" in rows.first.inner_text() and "maya" in rows.first.inner_text()
        page.select_option("#audit-filter select[name=kind]", "blob_evicted")
        page.click("#audit-filter button[type=submit]")
        assert "No entries match this filter." in page.inner_text("#audit")
        page.goto(f"{live_service.url}/orgs/acme/audit/")
        shoot(page, "audit")
