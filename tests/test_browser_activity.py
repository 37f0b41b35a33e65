"""The activity charts render in Debian's Chromium with the expected bars, at desktop
width and at a phone's 390 px, with nothing refused by the Content-Security-Policy.

Rows are made before the browser starts (Playwright runs an event loop in this thread),
at the real current hour: the live server has no time machine.
"""

from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import call_command
from django.utils import timezone

from accounts.models import Engine
from activity.models import Activity, StorageSample
from tests.browser import browser_page, log_in

pytestmark = pytest.mark.once
MIB = 1024 * 1024
SHOTS = Path("/tmp/cacheweb-activity-shots")


@pytest.fixture
def static_files(transactional_db):
    call_command("collectstatic", interactive=False, verbosity=0)


@pytest.fixture
def activity(org):
    hour = timezone.now().replace(minute=0, second=0, microsecond=0)
    builder = Engine.objects.create(organization=org, engine_id="ci-builder-1")
    laptop = Engine.objects.create(organization=org, engine_id="laptop-7")
    rows = [
        (builder, "layer_upload_bytes", 3 * MIB, hour),
        (builder, "exports_delivered", 4, hour - timedelta(hours=2)),
        (laptop, "shared_steps", 5, hour),
        (laptop, "download_urls", 7, hour),
        (laptop, "served_bytes", 6 * MIB, hour - timedelta(hours=1)),
        (None, "download_urls", 1, hour),
    ]
    for engine, name, value, start in rows:
        Activity.objects.create(organization=org, engine_ref=engine.pk if engine else 0, start=start, name=name, value=value)
    StorageSample.objects.create(
        organization=org, at=hour + timedelta(seconds=1), layer_bytes=12 * MIB, mount_bytes=3 * MIB, unreferenced_bytes=MIB
    )
    return {"hour": hour, "builder": builder, "laptop": laptop}


def bar_values(page, chart):
    """{(series, bucket): value} of the chart's bars that are not zero, and the bar count."""
    bars = page.locator(f"#chart-{chart} rect.bar")
    found = bars.evaluate_all(
        "rects => rects.map(r => [r.dataset.series, r.dataset.bucket, Number(r.dataset.value), r.getBoundingClientRect().height])"
    )
    return {(s, b): (v, h) for s, b, v, h in found if v}, len(found)


@pytest.mark.django_db(transaction=True)
def test_overview_and_engine_page_draw_the_activity(static_files, live_service, operators, org, activity):
    hour = activity["hour"].isoformat()
    two_ago = (activity["hour"] - timedelta(hours=2)).isoformat()
    SHOTS.mkdir(exist_ok=True)
    refused = []
    with browser_page() as page:
        page.on("console", lambda message: refused.append(message.text) if message.type == "error" else None)
        log_in(page, live_service.url, "victor", "pw-victor-123")
        page.wait_for_url(f"{live_service.url}/orgs/acme/")
        page.goto(f"{live_service.url}/orgs/acme/cache/?range=24h")

        found, count = bar_values(page, "reuse")
        assert count == 48
        assert {key: value for key, (value, _) in found.items()} == {
            ("download_urls", hour): 8, ("shared_steps", hour): 5,
        }
        # Drawn, not just present: 8 of a scale of 10 is taller than 5 of it.
        assert found[("download_urls", hour)][1] > found[("shared_steps", hour)][1] > 0
        found, count = bar_values(page, "storage")
        assert count == 3 and {k[0]: v for k, (v, _) in found.items()} == {
            "layer_bytes": 12 * MIB, "mount_bytes": 3 * MIB, "unreferenced_bytes": MIB,
        }
        assert page.get_attribute("#chart-reuse svg", "role") == "img"
        assert "shared steps: 5" in page.locator("#chart-reuse-desc").text_content()
        # The numbers behind the chart, for people who would rather read.
        page.click("#chart-reuse summary")
        row = page.locator(f"#chart-reuse tr[data-bucket='{hour}']")
        assert row.inner_text().split("\t")[1:] == ["8", "5"]
        page.screenshot(path=str(SHOTS / "overview-desktop.png"), full_page=True)

        page.set_viewport_size({"width": 390, "height": 844})
        page.goto(f"{live_service.url}/orgs/acme/cache/?range=24h")
        width = page.evaluate("document.querySelector('#activity').getBoundingClientRect().width")
        svg = page.locator("#chart-reuse svg").bounding_box()
        assert svg["width"] <= width and svg["width"] > 250
        assert page.evaluate("document.querySelector('#activity').scrollWidth <= document.querySelector('#activity').clientWidth")
        page.screenshot(path=str(SHOTS / "overview-390.png"), full_page=True)
        page.locator("#chart-reuse").screenshot(path=str(SHOTS / "overview-390-reuse.png"))
        page.locator(".range-switch").screenshot(path=str(SHOTS / "overview-390-range.png"))

        page.goto(f"{live_service.url}/orgs/acme/engines/{activity['builder'].pk}/?range=24h")
        found, count = bar_values(page, "transfers")
        assert count == 72 and {k: v for k, (v, _) in found.items()} == {("exports_delivered", two_ago): 4}
        found, _ = bar_values(page, "bytes")
        assert {k: v for k, (v, _) in found.items()} == {("bytes_up", hour): 3 * MIB}
        assert page.locator("#chart-storage").count() == 0
        assert "best guess" in page.inner_text("#attribution-note")
        page.screenshot(path=str(SHOTS / "engine-390.png"), full_page=True)
        page.set_viewport_size({"width": 1280, "height": 900})
        page.reload()
        page.screenshot(path=str(SHOTS / "engine-desktop.png"), full_page=True)

        page.goto(f"{live_service.url}/orgs/acme/engines/?sort=-shared_steps")
        names = page.locator("table.engines tbody tr td:first-child").all_inner_texts()
        assert names == ["laptop-7", "ci-builder-1"]
    assert not [text for text in refused if "Content Security Policy" in text or "Refused" in text], refused
