"""Adding to the activity counters: the one write path (engine paths, evictions, tasks).

    record(organization_id, {name: n, (name, label): n, ...}, engine_ref=0, at=None)

Each call is one INSERT ... ON CONFLICT DO UPDATE SET value = value + excluded.value, which
SQLite (3.24+) and PostgreSQL both run atomically: several processes on several machines
adding to one hour's row never lose a count.
"""

import contextvars

from django.db import connection, transaction
from django.utils import timezone

from activity.models import Activity, Period, Signal


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


# ---- one request's counts ---------------------------------------------------------------

# Upper bounds (seconds) of the engine request latency histogram's buckets; +Inf is the
# count itself. Stored as Activity rows ("engine_requests", "<endpoint> <bucket>") so that
# a request's latency rides along in the same single upsert as its counts.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
INF = "+Inf"


def latency_bucket(seconds):
    for bound in LATENCY_BUCKETS:
        if seconds <= bound:
            return format_bound(bound)
    return INF


def format_bound(bound):
    return repr(float(bound))


# The Tally of the engine request this thread is serving, if any: counts noticed deep in
# a call (a blob verified while answering it) join that call's single write.
current_tally = contextvars.ContextVar("activity_tally", default=None)


def add(organization_id, counts, engine_ref=0):
    """Add to counters ({name: n, (name, label): n}) from anywhere: into the current
    engine request's tally when it serves this organization, else written at once (after
    commit) by one record()."""
    tally = current_tally.get()
    if tally is not None and tally.organization_id in (None, organization_id):
        for key, value in counts.items():
            name, label = key if isinstance(key, tuple) else (key, "")
            tally.add(name, value, label)
    else:
        record(organization_id, counts, engine_ref=engine_ref)


class Tally:
    """What one engine request counted, written by one record() call when it ends."""

    def __init__(self, organization_id=None):
        self.counts = {}
        self.organization_id = organization_id

    def add(self, name, value=1, label=""):
        if value:
            key = (name, label) if label else name
            self.counts[key] = self.counts.get(key, 0) + int(value)

    def add_latency(self, endpoint, seconds):
        self.add(Signal.ENGINE_REQUESTS, 1, f"{endpoint} {latency_bucket(seconds)}")
        self.add(Signal.ENGINE_REQUEST_MICROSECONDS, round(seconds * 1_000_000), endpoint)

    def flush(self, organization_id, engine_ref=0):
        counts, self.counts = self.counts, {}
        record(organization_id, counts, engine_ref=engine_ref)
