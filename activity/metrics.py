"""/metrics in the Prometheus text format (0.0.4), read from the database.

Counters are sums over the Activity rows (hourly and rolled-up day rows alike), so every
web process answers the same totals whichever of them served the traffic, and a roll-up
(which swaps hours for a day of the same sum in one transaction) never lowers one.
Gauges are what the organization stores now. The latency histogram's buckets are
Activity rows too (see recording.Tally.add_latency), made cumulative here.
"""

from django.db.models import Sum

from accounts.models import Organization
from activity.models import Activity, Signal
from activity.recording import INF, LATENCY_BUCKETS, format_bound

# (metric, signal, help): counters summed over every label of the signal.
COUNTERS = [
    ("cacheweb_layer_uploads_total", Signal.LAYER_UPLOADS, "Layer blobs uploaded (counted when verified)."),
    ("cacheweb_layer_upload_bytes_total", Signal.LAYER_UPLOAD_BYTES, "Bytes of layer blobs uploaded."),
    ("cacheweb_upload_skips_total", Signal.UPLOAD_SKIPS, "Upload URL requests answered Skip (blob already held)."),
    ("cacheweb_upload_skipped_bytes_total", Signal.UPLOAD_SKIPPED_BYTES, "Bytes engines did not upload thanks to Skip."),
    ("cacheweb_download_urls_total", Signal.DOWNLOAD_URLS, "Layer download URLs issued."),
    ("cacheweb_served_bytes_total", Signal.SERVED_BYTES, "Blob bytes sent by the built-in storage."),
    ("cacheweb_records_posts_total", Signal.RECORDS_POSTS, "/records posts."),
    ("cacheweb_exports_asked_total", Signal.EXPORTS_ASKED, "Records engines were asked to export."),
    ("cacheweb_exports_delivered_total", Signal.EXPORTS_DELIVERED, "Records delivered through /layers."),
    ("cacheweb_shared_steps_total", Signal.SHARED_STEPS, "Reported steps another engine had exported."),
    ("cacheweb_imports_total", Signal.IMPORTS, "Imports served (including unchanged ones)."),
    ("cacheweb_mount_uploads_total", Signal.MOUNT_UPLOADS, "Cache mount snapshots uploaded."),
    ("cacheweb_mount_downloads_total", Signal.MOUNT_DOWNLOADS, "Cache mount snapshots offered for download."),
]
# (metric, signal, help): counters with the signal's label as `reason`.
BY_REASON = [
    ("cacheweb_evictions_total", Signal.EVICTIONS, "Evictions, by who evicted (user, policy, engine)."),
    ("cacheweb_evicted_bytes_total", Signal.EVICTED_BYTES, "Bytes freed by evictions, by who evicted."),
]
HISTOGRAM = "cacheweb_engine_request_duration_seconds"


def _label_value(value):
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels):
    return "{" + ",".join(f'{k}="{_label_value(v)}"' for k, v in labels.items()) + "}"


def _sums():
    """{(organization_id, name, label): total} over all rows, in one query."""
    rows = Activity.objects.order_by().values_list("organization_id", "name", "label").annotate(total=Sum("value"))
    return {(org, name, label): total for org, name, label, total in rows}


def render():
    from dashboard.queries import stored_bytes, totals

    organizations = list(Organization.objects.order_by("slug").values_list("pk", "slug"))
    sums = _sums()
    by_signal = {}
    for (org, name, label), total in sums.items():
        by_signal.setdefault((org, name), {})[label] = total
    lines = []

    for metric, signal, help_text in COUNTERS:
        lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} counter"]
        for pk, slug in organizations:
            lines.append(f"{metric}{_labels(org=slug)} {sum(by_signal.get((pk, signal), {}).values())}")
    for metric, signal, help_text in BY_REASON:
        lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} counter"]
        for pk, slug in organizations:
            for reason, total in sorted(by_signal.get((pk, signal), {}).items()):
                lines.append(f"{metric}{_labels(org=slug, reason=reason)} {total}")

    gauges = {"cacheweb_stored_bytes": [], "cacheweb_records": [], "cacheweb_results": []}
    for pk, slug in organizations:
        organization = Organization(pk=pk, slug=slug)
        totals_row = totals(organization)
        stored = stored_bytes(organization, totals_row)
        for kind in ("layer", "mount", "unreferenced"):
            gauges["cacheweb_stored_bytes"].append(f"{_labels(org=slug, kind=kind)} {getattr(stored, kind)}")
        gauges["cacheweb_records"].append(f"{_labels(org=slug)} {totals_row.records}")
        gauges["cacheweb_results"].append(f"{_labels(org=slug)} {totals_row.results}")
    helps = {
        "cacheweb_stored_bytes": "Bytes stored now, by kind (layer, mount, unreferenced).",
        "cacheweb_records": "Records (cache keys) stored now.",
        "cacheweb_results": "Results (exported layer chains) stored now.",
    }
    for metric, samples in gauges.items():
        lines += [f"# HELP {metric} {helps[metric]}", f"# TYPE {metric} gauge"]
        lines += [f"{metric}{sample}" for sample in samples]

    lines += [
        f"# HELP {HISTOGRAM} Time the service took to answer engine calls, by endpoint.",
        f"# TYPE {HISTOGRAM} histogram",
    ]
    bounds = [format_bound(b) for b in LATENCY_BUCKETS] + [INF]
    for pk, slug in organizations:
        buckets = by_signal.get((pk, Signal.ENGINE_REQUESTS), {})
        micros = by_signal.get((pk, Signal.ENGINE_REQUEST_MICROSECONDS), {})
        per_endpoint = {}
        for label, n in buckets.items():
            endpoint, _, bound = label.rpartition(" ")
            per_endpoint.setdefault(endpoint, {})[bound] = n
        for endpoint in sorted(per_endpoint):
            running = 0
            for bound in bounds:
                running += per_endpoint[endpoint].get(bound, 0)
                lines.append(f"{HISTOGRAM}_bucket{_labels(org=slug, endpoint=endpoint, le=bound)} {running}")
            lines.append(f"{HISTOGRAM}_sum{_labels(org=slug, endpoint=endpoint)} {micros.get(endpoint, 0) / 1e6}")
            lines.append(f"{HISTOGRAM}_count{_labels(org=slug, endpoint=endpoint)} {running}")
    return "\n".join(lines) + "\n"
