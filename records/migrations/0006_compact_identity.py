"""Record.identity as its 32 bytes instead of "sha256:" and 64 hex characters.

PostgreSQL converts the column in place (decode of the hex, the unique index rebuilt by
ALTER TYPE); SQLite rebuilds the table as usual for a type change and the rows are
converted in Python (its unhex() is newer than the SQLite Python ships with).
"""

from django.db import migrations, models

import records.fields

TABLE = "records_record"
PREFIX = len("sha256:")
BATCH = 2000


def _old_field():
    field = models.CharField(max_length=135)
    field.set_attributes_from_name("identity")
    return field


def _new_field():
    field = records.fields.DigestBytesField()
    field.set_attributes_from_name("identity")
    return field


def _rewrite(schema_editor, convert):
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(f"SELECT id, identity FROM {TABLE}")
        rows = [(convert(identity), pk) for pk, identity in cursor.fetchall()]
        for start in range(0, len(rows), BATCH):
            cursor.executemany(f"UPDATE {TABLE} SET identity = %s WHERE id = %s", rows[start : start + BATCH])


def _to_bytes(identity):
    return identity if isinstance(identity, bytes) else bytes.fromhex(identity[PREFIX:])


def _to_text(identity):
    return identity if isinstance(identity, str) else "sha256:" + bytes(identity).hex()


def forward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            f"ALTER TABLE {TABLE} ALTER COLUMN identity TYPE bytea USING decode(substr(identity, {PREFIX + 1}), 'hex')"
        )
        return
    Record = apps.get_model("records", "Record")
    old, new = _old_field(), _new_field()
    old.model = new.model = Record
    schema_editor.alter_field(Record, old, new)
    _rewrite(schema_editor, _to_bytes)


def backward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            f"ALTER TABLE {TABLE} ALTER COLUMN identity TYPE varchar(135) USING 'sha256:' || encode(identity, 'hex')"
        )
        return
    Record = apps.get_model("records", "Record")
    old, new = _old_field(), _new_field()
    old.model = new.model = Record
    _rewrite(schema_editor, _to_text)
    schema_editor.alter_field(Record, new, old)


class Migration(migrations.Migration):

    dependencies = [("records", "0005_drop_graph_fks")]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="record",
                    name="identity",
                    field=records.fields.DigestBytesField(
                        help_text="our content address (digest plus inputs, recursively); the engine echoes it"
                    ),
                ),
            ],
            database_operations=[migrations.RunPython(forward, backward)],
        ),
    ]
