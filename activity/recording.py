"""Adding to the activity counters: the one write path (engine paths, evictions, tasks).

    record(organization_id, {name: n, (name, label): n, ...}, engine_ref=0, at=None)

Each call is one INSERT ... ON CONFLICT DO UPDATE SET value = value + excluded.value, which
SQLite (3.24+) and PostgreSQL both run atomically: several processes on several machines
adding to one hour's row never lose a count.
"""

from django.db import connection, transaction
from django.utils import timezone

from activity.models import Activity, Period


def hour_of(at):
    return at.replace(minute=0, second=0, microsecond=0)


def _rows(counts):
    for key, value in counts.items():
        if not value:
            continue
        name, label = key if isinstance(key, tuple) else (key, "")
        yield name, label or "", int(value)


def record(organization_id, counts, engine_ref=0, at=None, period=Period.HOUR):
    rows = list(_rows(counts))
    if not rows:
        return
    start = at or timezone.now()
    start = hour_of(start) if period == Period.HOUR else start.replace(hour=0, minute=0, second=0, microsecond=0)
    # Inside a request's transaction the counts wait for its commit: a rolled-back export
    # is not counted, and the hot counter row is locked for a moment, not for the request.
    transaction.on_commit(lambda: _upsert(organization_id, engine_ref or 0, period, start, rows))


def _upsert(organization_id, engine_ref, period, start, rows):
    table = Activity._meta.db_table
    placeholders = ", ".join(["(%s, %s, %s, %s, %s, %s, %s)"] * len(rows))
    start_value = connection.ops.adapt_datetimefield_value(start)
    params = []
    for name, label, value in rows:
        params += [organization_id, engine_ref, period, start_value, name, label, value]
    sql = (
        f"INSERT INTO {table} (organization_id, engine_ref, period, start, name, label, value) "
        f"VALUES {placeholders} "
        "ON CONFLICT (organization_id, engine_ref, period, start, name, label) "
        f"DO UPDATE SET value = {table}.value + excluded.value"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
