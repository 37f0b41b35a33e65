"""The graph's hot tables without deferred foreign-key checks and redundant indexes.

RecordInput's three foreign keys lose their database constraints (PostgreSQL checked each
of them for every inserted input at COMMIT); the organization_id, record_id and result_id
indexes that a wider index already leads are dropped. docs/schema.md says why each is safe.
"""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("accounts", "0005_engine_token_use"),
        ("records", "0004_step_sizes_layer_contents"),
    ]

    operations = [
        migrations.AlterField(
            model_name="layer",
            name="organization",
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name="layers", to="accounts.organization"),
        ),
        migrations.AlterField(
            model_name="record",
            name="organization",
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name="records", to="accounts.organization"),
        ),
        migrations.AlterField(
            model_name="recordinput",
            name="organization",
            field=models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name="+", to="accounts.organization"),
        ),
        migrations.AlterField(
            model_name="recordinput",
            name="record",
            field=models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name="inputs", to="records.record"),
        ),
        migrations.AlterField(
            model_name="recordinput",
            name="source",
            field=models.ForeignKey(db_constraint=False, on_delete=django.db.models.deletion.CASCADE, related_name="dependants", to="records.record"),
        ),
        migrations.AlterField(
            model_name="result",
            name="record",
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name="results", to="records.record"),
        ),
        migrations.AlterField(
            model_name="resultlayer",
            name="result",
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name="chain_layers", to="records.result"),
        ),
    ]
