"""Bulk reads and writes of records and inputs in plain SQL.

A /records post carries tens of thousands of keys, every export period. Django's
bulk_create builds one parameter per value and spends seconds compiling SQL, so these few
statements are written for each database: on PostgreSQL a whole column travels as one
array parameter (unnest / = ANY); on SQLite, whose statements take at most 999 variables,
executemany and IN batches do the work.
"""

import orjson
from django.db import connection

from records.models import PendingExport, Record, RecordInput

SQLITE_BATCH = 900
POSTGRES_BATCH = 20_000

_RECORD = Record._meta.db_table
_PENDING = PendingExport._meta.db_table
_INPUT = RecordInput._meta.db_table


def _postgres():
    return connection.vendor == "postgresql"


def _chunks(values, size):
    values = list(values)
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _json_rows(names, rows):
    return orjson.dumps([dict(zip(names, row)) for row in rows]).decode()


def records_by_identity(organization_id, identities):
    """{identity: (id, has_result)} for those of `identities` stored for the organization."""
    found = {}
    with connection.cursor() as cursor:
        if _postgres():
            for chunk in _chunks(identities, POSTGRES_BATCH):
                # Digests hold no commas.
                cursor.execute(
                    f"SELECT identity, id, has_result FROM {_RECORD} "
                    "WHERE organization_id = %s AND identity = ANY(string_to_array(%s, ','))",
                    [organization_id, ",".join(chunk)],
                )
                for identity, record_id, has_result in cursor.fetchall():
                    found[identity] = (record_id, bool(has_result))
        else:
            for chunk in _chunks(identities, SQLITE_BATCH):
                marks = ",".join(["%s"] * len(chunk))
                cursor.execute(
                    f"SELECT identity, id, has_result FROM {_RECORD} "
                    f"WHERE organization_id = %s AND identity IN ({marks})",
                    [organization_id, *chunk],
                )
                for identity, record_id, has_result in cursor.fetchall():
                    found[identity] = (record_id, bool(has_result))
    return found


def insert_records(organization_id, rows, created_at):
    """Insert (identity, digest, input_count, description) rows; existing ones are skipped."""
    if not rows:
        return
    created_at = connection.ops.adapt_datetimefield_value(created_at)
    with connection.cursor() as cursor:
        if _postgres():
            for chunk in _chunks(rows, POSTGRES_BATCH):
                cursor.execute(
                    f"INSERT INTO {_RECORD} "
                    "(organization_id, identity, digest, input_count, description, has_result, created_at) "
                    "SELECT %s, t.i, t.d, t.n, t.s, false, %s "
                    "FROM json_to_recordset(%s::json) AS t(i varchar, d varchar, n integer, s varchar) "
                    "ON CONFLICT (organization_id, identity) DO NOTHING",
                    [organization_id, created_at, _json_rows(("i", "d", "n", "s"), chunk)],
                )
        else:
            cursor.executemany(
                f"INSERT OR IGNORE INTO {_RECORD} "
                "(organization_id, identity, digest, input_count, description, has_result, created_at) "
                "VALUES (%s, %s, %s, %s, %s, 0, %s)",
                [(organization_id, *row, created_at) for row in rows],
            )


def insert_inputs(organization_id, rows):
    """Insert (record_id, index, selector, source_id) rows; existing ones are skipped."""
    if not rows:
        return
    with connection.cursor() as cursor:
        if _postgres():
            for chunk in _chunks(rows, POSTGRES_BATCH):
                cursor.execute(
                    f'INSERT INTO {_INPUT} (organization_id, record_id, "index", selector, source_id) '
                    "SELECT %s, t.r, t.i, t.s, t.f "
                    "FROM json_to_recordset(%s::json) AS t(r bigint, i integer, s varchar, f bigint) "
                    "ON CONFLICT DO NOTHING",
                    [organization_id, _json_rows(("r", "i", "s", "f"), chunk)],
                )
        else:
            cursor.executemany(
                f'INSERT OR IGNORE INTO {_INPUT} (organization_id, record_id, "index", selector, source_id) '
                "VALUES (%s, %s, %s, %s, %s)",
                [(organization_id, *row) for row in rows],
            )


def asked_since(record_ids, since):
    """Those of `record_ids` that we asked an engine to export after `since`."""
    found = set()
    since = connection.ops.adapt_datetimefield_value(since)
    with connection.cursor() as cursor:
        if _postgres():
            for chunk in _chunks(record_ids, POSTGRES_BATCH):
                cursor.execute(
                    f"SELECT record_id FROM {_PENDING} "
                    "WHERE record_id = ANY(string_to_array(%s, ',')::bigint[]) AND asked_at > %s",
                    [",".join(map(str, chunk)), since],
                )
                found.update(row[0] for row in cursor.fetchall())
        else:
            for chunk in _chunks(record_ids, SQLITE_BATCH):
                marks = ",".join(["%s"] * len(chunk))
                cursor.execute(
                    f"SELECT record_id FROM {_PENDING} WHERE record_id IN ({marks}) AND asked_at > %s",
                    [*chunk, since],
                )
                found.update(row[0] for row in cursor.fetchall())
    return found
