"""Operators look at the cache and evict from it in a real browser against the real server.

Rows are made before the browser starts: Playwright runs an event loop in this thread, and
Django refuses database calls from inside one.
"""

from pathlib import Path

import pytest
from django.core.management import call_command

from accounts.models import Engine
from blobs.models import Blob
from blobs.storage import get_store
from mounts.models import CacheMount, MountSnapshot
from tests.browser import browser_page, log_in
from tests.cache_rows import a_blob, a_layer, a_snapshot

# CI runs this in the embedded pass only (pytest.ini: once).
pytestmark = pytest.mark.once


@pytest.fixture
def static_files(transactional_db):
    call_command("collectstatic", interactive=False, verbosity=0)


@pytest.fixture
def cache_contents(org):
    """A layer used by two results of one engine, a mount's snapshot, and a loose blob."""
    engine = Engine.objects.create(organization=org, engine_id="ci-builder-1")
    layer = a_blob(org, "browser layer", 5 * 1024 * 1024, uses=12)
    a_layer(org, layer, 5 * 1024 * 1024, results=2, engine=engine)
    mount = CacheMount.objects.create(organization=org, name="go-build")
    snapshot = a_blob(org, "browser snapshot", 3 * 1024)
    a_snapshot(mount, snapshot, 3 * 1024, engine=engine, file_count=77, uncompressed_bytes=9 * 1024)
    loose = a_blob(org, "browser loose", 100)
    return {"layer": layer, "snapshot": snapshot, "loose": loose, "mount": mount}


def blob_file(org, digest):
    return Path(get_store().path(org.pk, digest))


@pytest.mark.django_db(transaction=True)
def test_maintainer_sees_the_cache_and_evicts_a_blob(static_files, live_service, operators, org, cache_contents, tmp_path):
    layer = cache_contents["layer"]
    assert blob_file(org, layer).exists()
    with browser_page() as page:
        log_in(page, live_service.url, "maya", "pw-maya-123")
        page.wait_for_url(f"{live_service.url}/orgs/acme/")
        page.click("nav >> text=Cache")
        page.wait_for_url(f"{live_service.url}/orgs/acme/cache/")
        totals = page.inner_text("#cache-totals")
        assert "3 verified blobs" in totals and "5.0\xa0MB" in totals and "1 cache mount" in totals

        page.click("nav.subnav >> text=Blobs")
        row = page.locator(f"tr[data-digest='{layer}']")
        assert "5.0\xa0MB" in row.inner_text()
        assert "layer of 2 steps" in row.inner_text() and "ci-builder-1" in row.inner_text()
        # Shown short; the whole digest is its hover title and its text.
        assert row.locator("code.digest").get_attribute("title") == layer
        assert row.locator("code.digest").inner_text() == layer
        page.screenshot(path=str(tmp_path / "blobs.png"), full_page=True)

        row.locator("text=Evict").click()
        assert page.is_visible("text=Evict a blob")
        assert page.is_visible(f"text={layer}")
        page.click("#confirm-evict button[type=submit]")
        page.wait_for_url(f"{live_service.url}/orgs/acme/cache/blobs/")
        assert page.is_visible(f"text=Evicted {layer[:19]}")
        assert page.locator(f"tr[data-digest='{layer}']").count() == 0
        assert page.locator(f"tr[data-digest='{cache_contents['loose']}']").count() == 1

        # The mount's page shows its current snapshot.
        page.click("nav.subnav >> text=Mounts")
        page.click("text=go-build")
        current = page.inner_text("#current-snapshot")
        assert "3.0\xa0KB compressed, 9.0\xa0KB uncompressed" in current and "77" in current

    assert not Blob.objects.filter(organization=org, digest=layer).exists()
    assert not blob_file(org, layer).exists()
    assert Blob.objects.filter(organization=org).count() == 2


@pytest.mark.django_db(transaction=True)
def test_viewer_sees_the_cache_but_no_evict_button(static_files, live_service, operators, org, cache_contents):
    mount_url = f"{live_service.url}/orgs/acme/cache/mounts/{cache_contents['mount'].pk}/"
    with browser_page() as page:
        log_in(page, live_service.url, "victor", "pw-victor-123")
        page.wait_for_url(f"{live_service.url}/orgs/acme/")
        page.goto(f"{live_service.url}/orgs/acme/cache/blobs/")
        assert "5.0\xa0MB" in page.inner_text(f"tr[data-digest='{cache_contents['layer']}']")
        assert page.locator("text=Evict").count() == 0
        page.goto(mount_url)
        assert page.is_visible("text=Current snapshot")
        assert page.locator("#evict-mount").count() == 0

    assert Blob.objects.filter(organization=org).count() == 3
    assert MountSnapshot.objects.count() == 1
