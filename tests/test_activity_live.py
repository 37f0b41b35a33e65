"""Simulated engines against gunicorn with two workers: every activity counter matches the
traffic the engines report, and /metrics (asked of either worker) says the same."""

from pathlib import Path

import pytest
import requests
from django.db.models import Sum

from accounts.models import Engine
from activity.metrics import COUNTERS, HISTOGRAM
from activity.models import Activity, Signal
from blobs.models import Blob, BlobState
from enginesim.scenarios import RunOptions, run
from mounts.models import MountSnapshot
from records.models import Result
from tests.support import LiveService

pytestmark = pytest.mark.django_db(transaction=True)

METRICS_TOKEN = "live-metrics-token-1"


@pytest.fixture
def two_workers(transactional_db):
    service = LiveService(CACHEWEB_WEB_WORKERS=2, CACHEWEB_METRICS_TOKEN=METRICS_TOKEN)
    yield service
    service.stop()


def sums(org):
    rows = Activity.objects.filter(organization=org).values_list("name").annotate(n=Sum("value"))
    return dict(rows)


def histogram_counts(org):
    counts = {}
    for label, n in Activity.objects.filter(organization=org, name=Signal.ENGINE_REQUESTS).values_list("label", "value"):
        endpoint = label.rpartition(" ")[0]
        counts[endpoint] = counts.get(endpoint, 0) + n
    return counts


def scrape(service):
    response = requests.get(service.url + "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=30)
    assert response.status_code == 200, response.text
    return {
        line.rsplit(" ", 1)[0]: line.rsplit(" ", 1)[1] for line in response.text.splitlines() if not line.startswith("#")
    }


def test_counters_match_the_engines_traffic_over_two_workers(two_workers, org, token):
    report = run(RunOptions(url=two_workers.url + "/magicache", token=token, engines=2, scale=4096, settle_seconds=5))
    summary = "\n".join(report.lines()) + f"\n--- gunicorn ---\n{two_workers.output()[-3000:]}"
    assert report.violations == [] and report.failed_requests == 0, summary
    calls = {name: c["count"] for name, c in report.calls.items()}
    got = sums(org)
    mount_digests = set(MountSnapshot.objects.values_list("digest", flat=True))
    layer_blobs = Blob.objects.filter(organization=org, state=BlobState.VERIFIED).exclude(digest__in=mount_digests)
    assert got.get(Signal.RECORDS_POSTS) == calls["records"], summary
    assert got.get(Signal.KEYS_REPORTED) == report.records_posted  # keys posted, over all posts
    assert got.get(Signal.IMPORTS) == calls["import"]
    assert got.get(Signal.DOWNLOAD_URLS, 0) == calls.get("layerDownloadURL", 0)
    assert got.get(Signal.EXPORTS_DELIVERED) == Result.objects.count() == report.exported_records
    assert got.get(Signal.EXPORTS_ASKED) >= got[Signal.EXPORTS_DELIVERED]
    assert got.get(Signal.LAYER_UPLOADS) == layer_blobs.count() == report.layers_uploaded
    assert got.get(Signal.LAYER_UPLOAD_BYTES) == layer_blobs.aggregate(n=Sum("size"))["n"]
    assert got.get(Signal.UPLOAD_SKIPS, 0) == report.layers_skipped
    assert got.get(Signal.MOUNT_UPLOADS) == report.mounts_uploaded >= 2
    assert got.get(Signal.MOUNT_DOWNLOADS, 0) >= report.mounts_downloaded >= 1
    # Engine B reported the steps engine A had exported: shared, not asked for again.
    assert got.get(Signal.SHARED_STEPS, 0) > 0, summary
    # Every call after an engine's /config is put down to an engine.
    engines = set(Engine.objects.filter(organization=org).values_list("pk", flat=True))
    posters = set(Activity.objects.filter(organization=org, name=Signal.RECORDS_POSTS).values_list("engine_ref", flat=True))
    assert len(engines) == 2 and posters <= engines
    # One histogram count per engine call, per endpoint.
    engine_calls = {name: n for name, n in calls.items() if "PUT" not in name and "GET" not in name}
    assert histogram_counts(org) == engine_calls

    # Served bytes: what the engines read, and exactly a Range's length more for one more read.
    served = got.get(Signal.SERVED_BYTES, 0)
    assert served > 0
    digest, size = layer_blobs.order_by("-size").values_list("digest", "size").first()
    url = requests.get(
        two_workers.url + "/magicache/layerDownloadURL", json={"Digest": digest}, auth=(token, ""), timeout=10
    ).json()["URL"]
    part = requests.get(url, headers={"Range": "bytes=100-"}, timeout=10)
    assert part.status_code == 206 and len(part.content) == size - 100
    # The count is written as the response is closed, just after the client has the bytes.
    for _ in range(50):
        if sums(org).get(Signal.SERVED_BYTES) == served + size - 100:
            break
        requests.get(two_workers.url + "/healthz", timeout=10)
    after = sums(org)
    assert after[Signal.SERVED_BYTES] == served + size - 100

    # /metrics, whichever worker answers, is the database's sums.
    for _ in range(4):
        values = scrape(two_workers)
        for metric, signal, _help in COUNTERS:
            assert values[f'{metric}{{org="{org.slug}"}}'] == str(after.get(signal, 0)), metric
        assert values[f'{HISTOGRAM}_count{{org="{org.slug}",endpoint="records"}}'] == str(calls["records"])
    assert len(worker_pids(two_workers.proc.pid)) == 2


def worker_pids(master):
    """The gunicorn master's child processes (its workers)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == master:
            pids.append(int(stat.parent.name))
    return pids
