"""Bulk reads and writes of records and inputs in plain SQL.

A /records post carries tens of thousands of keys, every export period. Django's
bulk_create builds one parameter per value and spends seconds compiling SQL, so these few
statements are written for each database: on PostgreSQL a whole column travels as one
array parameter (= ANY) and new rows arrive by COPY; on SQLite, whose statements take at
most 999 variables, executemany and IN batches do the work.

Identities are "sha256:<hex>" strings here as everywhere in Python; the column holds
their 32 bytes (records.fields), converted at this edge.
"""

from django.db import connection, transaction

from records.fields import SCHEME, is_sha256, to_bytes
from records.models import PendingExport, Record, RecordInput

SQLITE_BATCH = 900
POSTGRES_BATCH = 20_000

_RECORD = Record._meta.db_table
_PENDING = PendingExport._meta.db_table
_INPUT = RecordInput._meta.db_table
SCHEME_LENGTH = len(SCHEME)


def _postgres():
    return connection.vendor == "postgresql"


def _chunks(values, size):
    values = list(values)
    for start in range(0, len(values), size):
        yield values[start : start + size]


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
    if _postgres():
        # The hex travels as one text parameter and is decoded by the server: quoting tens
        # of thousands of bytea values costs the client more than the whole lookup.
        hexes = [identity[SCHEME_LENGTH:] for identity in identities if is_sha256(identity)]
        rows = []
        with connection.cursor() as cursor:
            for chunk in _chunks(hexes, POSTGRES_BATCH):
                cursor.execute(
                    f"SELECT encode(identity, 'hex'), id, has_result FROM {_RECORD} WHERE organization_id = %s "
                    "AND identity = ANY(ARRAY(SELECT decode(h, 'hex') FROM unnest(string_to_array(%s, ',')) h))",
                    [organization_id, ",".join(chunk)],
                )
                rows += cursor.fetchall()
        return {SCHEME + hex_: (record_id, has_result) for hex_, record_id, has_result in rows}
    # The column's bytes back to the caller's own strings: no hex formatting per row.
    wanted = {}
    for identity in identities:
        key = to_bytes(identity)
        if key is not None:
            wanted[key] = identity
    rows = []
    with connection.cursor() as cursor:
        for chunk in _chunks(wanted, SQLITE_BATCH):
            cursor.execute(
                f"SELECT identity, id, has_result FROM {_RECORD} WHERE organization_id = %s "
                f"AND identity IN ({','.join(['%s'] * len(chunk))})",
                [organization_id, *chunk],
            )
            rows += cursor.fetchall()
    return {wanted[bytes(key)]: (record_id, bool(has_result)) for key, record_id, has_result in rows}


def _copy_then_insert(cursor, columns, rows, insert):
    """COPY `rows` into a temporary table of `columns` ("name type" each), then run
    `insert`, which reads it as `cw_new_rows` (in the order it wants: see records.services
    _store_records on why the order matters), and drop the table. Returns the rows the
    insert returned.

    COPY is the cheapest way into PostgreSQL; the table in between is what lets the
    insert skip rows a concurrent engine stored first (ON CONFLICT), which COPY cannot."""
    cursor.execute(f"CREATE TEMPORARY TABLE cw_new_rows ({', '.join(columns)}) ON COMMIT DROP")
    names = ", ".join(column.split()[0] for column in columns)
    with cursor.cursor.copy(f"COPY cw_new_rows ({names}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
    cursor.execute(*insert)
    returned = cursor.fetchall() if cursor.description else []
    cursor.execute("DROP TABLE cw_new_rows")
    return returned


def insert_records(organization_id, rows, created_at):
    """Insert (identity, digest, input_count, description) rows; existing ones are skipped.
    Returns {identity: (id, has_result)} of the rows inserted where the database says
    (PostgreSQL); the others are for the caller to look up (records_by_identity)."""
    if not rows:
        return {}
    created_at = connection.ops.adapt_datetimefield_value(created_at)
    columns = "organization_id, identity, digest, input_count, description, has_result, created_at"
    with transaction.atomic(savepoint=False), connection.cursor() as cursor:
        if _postgres():
            inserted = _copy_then_insert(
                cursor,
                # The text form, decoded by the server (see records_by_identity).
                ["identity varchar", "digest varchar", "input_count integer", "description varchar"],
                rows,
                (
                    f"INSERT INTO {_RECORD} ({columns}) "
                    f"SELECT %s, decode(substr(identity, {SCHEME_LENGTH + 1}), 'hex'), digest, input_count, "
                    "description, false, %s FROM cw_new_rows "
                    "ORDER BY identity ON CONFLICT (organization_id, identity) DO NOTHING "
                    "RETURNING encode(identity, 'hex'), id",
                    [organization_id, created_at],
                ),
            )
            return {SCHEME + hex_: (record_id, False) for hex_, record_id in inserted}
        cursor.executemany(
            f"INSERT OR IGNORE INTO {_RECORD} ({columns}) VALUES (%s, %s, %s, %s, %s, 0, %s)",
            [(organization_id, to_bytes(identity), *rest, created_at) for identity, *rest in rows],
        )
    return {}


def insert_inputs(organization_id, rows):
    """Insert (record_id, index, selector, source_id) rows; existing ones are skipped."""
    if not rows:
        return
    with transaction.atomic(savepoint=False), connection.cursor() as cursor:
        if _postgres():
            _copy_then_insert(
                cursor,
                ["record_id bigint", '"index" integer', "selector varchar", "source_id bigint"],
                rows,
                (
                    f'INSERT INTO {_INPUT} (organization_id, record_id, "index", selector, source_id) '
                    'SELECT %s, record_id, "index", selector, source_id FROM cw_new_rows '
                    'ORDER BY record_id, "index", selector, source_id ON CONFLICT DO NOTHING',
                    [organization_id],
                ),
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
