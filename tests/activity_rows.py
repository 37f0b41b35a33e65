"""Known activity for the chart, page and API tests: rows whose every number is asserted."""

from datetime import datetime, timedelta, timezone as dt_timezone

from accounts.models import Engine
from activity.models import Activity, Period, StorageSample

# The tests run at this moment (time_machine): the current hour is 14:00, the day Nov 30.
NOW = datetime(2026, 11, 30, 14, 37, tzinfo=dt_timezone.utc)
HOUR = NOW.replace(minute=0)
TODAY = NOW.replace(hour=0, minute=0)
MIB = 1024 * 1024


def add(org, name, value, start, engine=None, label="", period=Period.HOUR):
    Activity.objects.create(
        organization=org, engine_ref=engine.pk if engine else 0, period=period, start=start,
        name=name, label=label, value=value,
    )


def known_activity(org):
    """Two engines and the organization's unmatched calls, over hours of today, an hour of
    yesterday, and a day row from 10 days ago (rolled up). Returns the engines."""
    builder = Engine.objects.create(organization=org, engine_id="ci-builder-1", first_seen=NOW - timedelta(days=20))
    laptop = Engine.objects.create(organization=org, engine_id="laptop-7", first_seen=NOW - timedelta(days=2))
    # builder: uploads this hour and two hours ago, exports, one refusal.
    add(org, "layer_upload_bytes", 3 * MIB, HOUR, builder)
    add(org, "mount_upload_bytes", 1 * MIB, HOUR, builder)
    add(org, "layer_upload_bytes", 2 * MIB, HOUR - timedelta(hours=2), builder)
    add(org, "exports_delivered", 4, HOUR - timedelta(hours=2), builder)
    add(org, "exports_refused", 1, HOUR - timedelta(hours=2), builder, label="too large")
    add(org, "exports_refused", 2, HOUR - timedelta(hours=2), builder, label="read-only token")
    add(org, "imports", 1, HOUR - timedelta(hours=3), builder)
    # laptop: reuses the builder's work this hour and yesterday.
    add(org, "shared_steps", 5, HOUR, laptop)
    add(org, "download_urls", 7, HOUR, laptop)
    add(org, "served_bytes", 6 * MIB, HOUR, laptop)
    add(org, "imports", 2, HOUR, laptop)
    add(org, "shared_steps", 3, HOUR - timedelta(days=1), laptop)
    add(org, "upload_skips", 2, HOUR - timedelta(days=1), laptop)
    add(org, "upload_skipped_bytes", 8 * MIB, HOUR - timedelta(days=1), laptop)
    # unmatched: a download URL this hour; a rolled-up day 10 days ago.
    add(org, "download_urls", 1, HOUR)
    add(org, "download_urls", 40, TODAY - timedelta(days=10), period=Period.DAY)
    add(org, "exports_delivered", 9, TODAY - timedelta(days=10), builder, period=Period.DAY)
    # Another counter the charts do not read.
    add(org, "keys_reported", 1000, HOUR, builder)
    # Storage: a sample 3 hours ago, two this hour (the later one counts), one 5 days ago.
    for at, layers, mounts, loose in [
        (HOUR - timedelta(hours=3, minutes=-5), 10 * MIB, 2 * MIB, 0),
        (HOUR + timedelta(minutes=1), 11 * MIB, 2 * MIB, 1 * MIB),
        (HOUR + timedelta(minutes=30), 12 * MIB, 3 * MIB, 1 * MIB),
        (TODAY - timedelta(days=5, hours=-6), 4 * MIB, 0, 0),
    ]:
        StorageSample.objects.create(organization=org, at=at, layer_bytes=layers, mount_bytes=mounts, unreferenced_bytes=loose)
    return builder, laptop
