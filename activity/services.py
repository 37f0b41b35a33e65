"""Keeping the activity history: hourly rows rolled into days, hourly storage samples."""

from datetime import timedelta
from datetime import timezone as dt_timezone

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from accounts.models import Organization
from activity.models import Activity, Period, StorageSample
from activity.recording import _upsert, hour_of


def rollup_cutoff(now=None, days=None):
    """Hourly rows starting before this midnight are rolled into days: whole days only,
    so that a day is never half hours, half a day row."""
    now = now or timezone.now()
    days = settings.ACTIVITY_DAYS if days is None else days
    return (now - timedelta(days=days)).replace(hour=0, minute=0, second=0, microsecond=0)


def roll_up(now=None, days=None):
    """Replace the hourly rows older than CACHEWEB_ACTIVITY_DAYS by day rows with the same
    sums, in one transaction. Returns how many hourly rows went.

    The hourly rows are deleted first (DELETE ... RETURNING) and their sums added to the
    day rows by the same upsert engines use: a second run at the same time waits for the
    rows, finds them gone and adds nothing; readers see the old rows or the new ones,
    never neither, so a total over all rows never goes down."""
    cutoff = connection.ops.adapt_datetimefield_value(rollup_cutoff(now, days))
    table = Activity._meta.db_table
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {table} WHERE period = %s AND start < %s "
            "RETURNING organization_id, engine_ref, start, name, label, value",
            [Period.HOUR, cutoff],
        )
        gone = cursor.fetchall()
        days_of = {}
        for organization_id, engine_ref, start, name, label, value in gone:
            if isinstance(start, str):  # SQLite hands back the stored text
                start = Activity._meta.get_field("start").to_python(start)
            if timezone.is_naive(start):
                start = start.replace(tzinfo=dt_timezone.utc)
            day = start.replace(hour=0, minute=0, second=0, microsecond=0)
            counts = days_of.setdefault((organization_id, engine_ref, day), {})
            counts[(name, label)] = counts.get((name, label), 0) + value
        for (organization_id, engine_ref, day), counts in sorted(days_of.items()):
            rows = [(name, label, value) for (name, label), value in sorted(counts.items())]
            for start in range(0, len(rows), 100):
                _upsert(organization_id, engine_ref, Period.DAY, day, rows[start : start + 100])
    return len(gone)


def take_storage_samples(now=None):
    """One StorageSample per organization for this hour (a second run in the same hour
    adds none). Returns how many were taken."""
    from dashboard.queries import stored_bytes, totals

    now = now or timezone.now()
    hour = hour_of(now)
    taken = 0
    for organization in Organization.objects.order_by("pk"):
        if StorageSample.objects.filter(organization=organization, at__gte=hour, at__lt=hour + timedelta(hours=1)).exists():
            continue
        totals_row = totals(organization)
        stored = stored_bytes(organization, totals_row)
        StorageSample.objects.create(
            organization=organization,
            at=now,
            layer_bytes=stored.layer,
            mount_bytes=stored.mount,
            unreferenced_bytes=stored.unreferenced,
            records=totals_row.records,
            results=totals_row.results,
        )
        taken += 1
    return taken
