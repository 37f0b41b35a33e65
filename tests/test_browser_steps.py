"""A maintainer works through the build steps in a real browser, against the real server and
a real Celery worker (which indexes the layer's contents).

Rows are made before the browser starts: Playwright runs an event loop in this thread, and
Django refuses database calls from inside one.
"""

from pathlib import Path

import pytest
from django.core.management import call_command

from blobs.storage import get_store
from records.models import Result
from tests.browser import browser_page, log_in
from tests.step_graph import BUILD, COPY_MOD, PULL, export_graph, layer_digest

# CI runs this in the embedded pass only (pytest.ini: once).
pytestmark = pytest.mark.once

SHOTS = Path("/tmp/cacheweb-shots")


@pytest.fixture
def static_files(transactional_db):
    call_command("collectstatic", interactive=False, verbosity=0)


@pytest.mark.django_db(transaction=True)
def test_maintainer_searches_walks_inspects_and_evicts_a_step(
    static_files, live_service, celery_worker_process, operators, org, token, client, tmp_path
):
    graph = export_graph(client, org, token)
    build_a, mod = graph.records["build-a"], graph.records["mod"]
    own_layer = Path(get_store().path(org.pk, layer_digest("build-a")))
    assert own_layer.exists()
    base = live_service.url
    with browser_page() as page:
        log_in(page, base, "maya", "pw-maya-123")
        page.wait_for_url(f"{base}/orgs/acme/")
        page.goto(f"{base}/orgs/acme/cache/steps/")
        page.fill("#step-filter input[name=q]", "go BUILD")
        page.click("#step-filter button[type=submit]")
        page.wait_for_url("**/cache/steps/?*q=go+BUILD*")
        assert page.inner_text("#step-count") == "2 steps"
        assert page.locator("tr[data-step]").count() == 2
        _screenshots(page, "steps")

        # The build on go.mod: its input is the go.mod copy, whose input is the image.
        page.click(f"tr[data-step='{build_a.pk}'] a.desc")
        page.wait_for_url(f"{base}/orgs/acme/cache/steps/{build_a.pk}/")
        assert page.inner_text("h1") == BUILD
        chain = page.locator("#layer-chain tr[data-layer]")
        assert chain.count() == 3
        assert chain.nth(2).get_attribute("data-layer") == layer_digest("build-a")
        _screenshots(page, "step")
        page.click(f"#step-inputs tr[data-input='{mod.pk}'] a")
        page.wait_for_url(f"{base}/orgs/acme/cache/steps/{mod.pk}/")
        assert page.inner_text("h1") == COPY_MOD
        assert page.is_visible(f"#step-inputs >> text={PULL}")
        page.go_back()

        # The step's own layer: indexed by the worker while the page refreshes itself.
        page.click(f"#layer-chain tr[data-layer='{layer_digest('build-a')}'] a.contents-link")
        page.wait_for_selector("#layer-contents", timeout=60_000)
        assert "build-a/bin/build-a.out" in page.inner_text("#largest-files")
        page.fill("#listing-filter input[name=path]", "readme")
        page.click("#listing-filter button[type=submit]")
        page.wait_for_url("**path=readme*")
        assert page.locator("#listing tbody tr").count() == 1
        assert "build-a/README" in page.inner_text("#listing")
        _screenshots(page, "layer")
        page.go_back()
        page.go_back()
        page.wait_for_url(f"{base}/orgs/acme/cache/steps/{build_a.pk}/")

        page.click("#evict-step")
        assert page.is_visible("text=Evict a step")
        assert "1 layer blob that no other step uses is deleted" in page.inner_text("#eviction-plan")
        _screenshots(page, "step-evict")
        page.click("#confirm-evict button[type=submit]")
        page.wait_for_url(f"{base}/orgs/acme/cache/steps/")
        assert page.is_visible("text=Evicted step")
        assert page.locator(f"tr[data-step='{build_a.pk}']").count() == 0
        assert page.locator(f"tr[data-step='{mod.pk}']").count() == 1

    assert not Result.objects.filter(record=build_a).exists()
    assert not own_layer.exists()


def _screenshots(page, name):
    """Desktop and phone width, for people to look at (kept out of the assertions)."""
    SHOTS.mkdir(exist_ok=True)
    page.set_viewport_size({"width": 1280, "height": 900})
    page.screenshot(path=str(SHOTS / f"{name}-desktop.png"), full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})
    page.screenshot(path=str(SHOTS / f"{name}-390.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 900})
