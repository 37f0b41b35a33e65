from django.db import migrations, models
import django.db.models.deletion
import django.utils.timezone


def fill_sizes(apps, schema_editor):
    """Existing results: sizes and top layer from their chains, in batches."""
    Result = apps.get_model("records", "Result")
    ResultLayer = apps.get_model("records", "ResultLayer")
    ids = list(Result.objects.order_by("pk").values_list("pk", flat=True))
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        chains = {}
        rows = (
            ResultLayer.objects.filter(result_id__in=chunk)
            .order_by("result_id", "position")
            .values_list("result_id", "layer__size", "layer__digest")
        )
        for result_id, size, digest in rows:
            chains.setdefault(result_id, []).append((size, digest))
        updates = []
        for result_id, layers in chains.items():
            updates.append(
                Result(
                    pk=result_id,
                    size=layers[-1][0],
                    chain_size=sum(size for size, _ in layers),
                    layer_count=len(layers),
                    top_digest=layers[-1][1],
                )
            )
        Result.objects.bulk_update(updates, ["size", "chain_size", "layer_count", "top_digest"])


class Migration(migrations.Migration):
    dependencies = [("records", "0003_import_build_claim")]

    operations = [
        migrations.AddField(
            model_name="result", name="size",
            field=models.BigIntegerField(default=0, help_text="bytes of the top layer (the step's own)"),
        ),
        migrations.AddField(
            model_name="result", name="chain_size",
            field=models.BigIntegerField(default=0, help_text="bytes of the whole layer chain"),
        ),
        migrations.AddField(model_name="result", name="layer_count", field=models.PositiveIntegerField(default=0)),
        migrations.AddField(
            model_name="result", name="top_digest",
            field=models.CharField(blank=True, help_text="the top layer's digest", max_length=135),
        ),
        migrations.RunPython(fill_sizes, migrations.RunPython.noop),
        migrations.CreateModel(
            name="LayerContents",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("state", models.CharField(choices=[("pending", "being indexed"), ("complete", "complete"), ("truncated", "partial (a limit was reached)"), ("invalid", "not a tar archive"), ("missing", "blob not stored")], default="pending", max_length=10)),
                ("summary", models.JSONField(blank=True, help_text="blobs.contents summary", null=True)),
                ("listing", models.JSONField(blank=True, help_text="[[path, size, kind], ...], capped", null=True)),
                ("file_count", models.BigIntegerField(blank=True, null=True)),
                ("uncompressed_bytes", models.BigIntegerField(blank=True, null=True)),
                ("requested_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("indexed_at", models.DateTimeField(blank=True, null=True)),
                ("layer", models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, related_name="contents", to="records.layer")),
            ],
        ),
    ]
