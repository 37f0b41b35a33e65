from django.db import migrations, models
import django.db.models.deletion
import django.utils.timezone


def fill_sizes(apps, schema_editor):
    """Existing results: sizes and top layer from their chains, in batches."""
    Result = apps.get_model("records", "Result")
    ResultLayer = apps.get_model("records", "ResultLayer")
    Blob = apps.get_model("blobs", "Blob")
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
        tops = {result_id: layers[-1][1] for result_id, layers in chains.items()}
        orgs = dict(Result.objects.filter(pk__in=chunk).values_list("pk", "record__organization_id"))
        used = {
            (org_id, digest): last
            for org_id, digest, last in Blob.objects.filter(digest__in=set(tops.values()), last_used_at__isnull=False)
            .values_list("organization_id", "digest", "last_used_at")
        }
        updates = []
        for result_id, layers in chains.items():
            updates.append(
                Result(
                    pk=result_id,
                    size=layers[-1][0],
                    chain_size=sum(size for size, _ in layers),
                    layer_count=len(layers),
                    top_digest=layers[-1][1],
                    last_used_at=used.get((orgs[result_id], layers[-1][1])),
                )
            )
        Result.objects.bulk_update(updates, ["size", "chain_size", "layer_count", "top_digest", "last_used_at"])


class Migration(migrations.Migration):
    dependencies = [("records", "0003_import_build_claim"), ("blobs", "0001_initial")]

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
        migrations.AddField(
            model_name="result", name="last_used_at",
            field=models.DateTimeField(blank=True, null=True, help_text="last download URL issued for the top layer since this result was stored"),
        ),
        migrations.AddIndex(model_name="result", index=models.Index(fields=["top_digest"], name="records_res_top_dig_68a8a1_idx")),
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
