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


def _select_in(sql, column, values, before=(), after=(), cast=""):
    """The rows of `sql` whose `{match}` says that `column` is one of `values`, asked in
    batches: on PostgreSQL as one array parameter (the values, digests or ids, hold no
    commas), on SQLite as IN lists short enough for its variable limit. `before` and
    `after` are the parameters around the match; `cast` types the array on PostgreSQL."""
    rows = []
    with connection.cursor() as cursor:
        if _postgres():
            match = f"{column} = ANY(string_to_array(%s, ','){cast})"
            for chunk in _chunks(values, POSTGRES_BATCH):
                cursor.execute(sql.format(match=match), [*before, ",".join(map(str, chunk)), *after])
                rows += cursor.fetchall()
        else:
            for chunk in _chunks(values, SQLITE_BATCH):
                match = f"{column} IN ({','.join(['%s'] * len(chunk))})"
                cursor.execute(sql.format(match=match), [*before, *chunk, *after])
                rows += cursor.fetchall()
    return rows


def records_by_identity(organization_id, identities):
    """{identity: (id, has_result)} for those of `identities` stored for the organization."""
    rows = _select_in(
        f"SELECT identity, id, has_result FROM {_RECORD} WHERE organization_id = %s AND {{match}}",
        "identity", identities, before=[organization_id],
    )
    return {identity: (record_id, bool(has_result)) for identity, record_id, has_result in rows}


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
    """{record_id: cache_ref_id} for those of `record_ids` that we asked an engine to
    export after `since`, with the engine's ref id we asked for."""
    since = connection.ops.adapt_datetimefield_value(since)
    rows = _select_in(
        f"SELECT record_id, cache_ref_id FROM {_PENDING} WHERE {{match}} AND asked_at > %s",
        "record_id", record_ids, after=[since], cast="::bigint[]",
    )
    return dict(rows)


def results_exported_by_others(record_ids, engine_ref, token_id):
    """How many of `record_ids` have a complete result exported by another engine than
    `engine_ref` (or, where an engine is unknown, with another token than `token_id`):
    records.services.shared_steps, asked in batches like the other reads here."""
    from records.models import Result

    other_token = "(token_id IS NULL OR token_id <> %s)"
    if engine_ref:
        other = f"((engine_id IS NOT NULL AND engine_id <> %s) OR (engine_id IS NULL AND {other_token}))"
        after = [engine_ref, token_id or 0]
    else:
        other = other_token
        after = [token_id or 0]
    rows = _select_in(
        f"SELECT COUNT(DISTINCT record_id) FROM {Result._meta.db_table} "
        f"WHERE {{match}} AND complete = %s AND {other}",
        "record_id",
        record_ids,
        after=[True, *after],
        cast="::bigint[]",
    )
    return sum(row[0] for row in rows)
