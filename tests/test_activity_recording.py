import threading
from datetime import datetime, timezone as dt_timezone

import pytest
from django.db import connection, transaction

from activity.models import Activity, Period
from activity.recording import record

AT = datetime(2026, 11, 30, 14, 37, 12, tzinfo=dt_timezone.utc)


def values(org):
    return {
        (a.engine_ref, a.period, a.start, a.name, a.label): a.value
        for a in Activity.objects.filter(organization=org)
    }


def test_counts_add_up_in_one_row_per_hour_engine_and_label(org, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        record(org.id, {"records_posts": 1, "keys_reported": 40}, engine_ref=7, at=AT)
        record(org.id, {"records_posts": 1, "keys_reported": 2, ("exports_refused", "too large"): 3}, engine_ref=7, at=AT)
        record(org.id, {"records_posts": 1}, at=AT.replace(minute=59))
        record(org.id, {"records_posts": 1, "imports": 0}, engine_ref=7, at=AT.replace(hour=15))
    hour = AT.replace(minute=0, second=0)
    assert values(org) == {
        (7, "hour", hour, "records_posts", ""): 2,
        (7, "hour", hour, "keys_reported", ""): 42,
        (7, "hour", hour, "exports_refused", "too large"): 3,
        (0, "hour", hour, "records_posts", ""): 1,
        (7, "hour", hour.replace(hour=15), "records_posts", ""): 1,
    }


def test_day_rows_start_at_midnight(org, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        record(org.id, {"imports": 5}, at=AT, period=Period.DAY)
    (row,) = Activity.objects.filter(organization=org)
    assert (row.period, row.start, row.value) == ("day", AT.replace(hour=0, minute=0, second=0), 5)


def test_counts_inside_a_rolled_back_transaction_are_dropped(org):
    with pytest.raises(RuntimeError):
        with transaction.atomic():
            record(org.id, {"records_posts": 1}, at=AT)
            raise RuntimeError
    assert values(org) == {}


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_lose_no_count():
    from accounts.models import Organization

    org = Organization.ensure("acme")
    threads, per_thread = 4, 25
    errors = []

    def add():
        try:
            for _ in range(per_thread):
                record(org.id, {"download_urls": 1, "served_bytes": 10}, engine_ref=1, at=AT)
        except Exception as exc:  # surfaced below
            errors.append(exc)
        finally:
            connection.close()

    workers = [threading.Thread(target=add) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert errors == []
    got = {(a.name): a.value for a in Activity.objects.filter(organization=org)}
    assert got == {"download_urls": threads * per_thread, "served_bytes": 10 * threads * per_thread}
