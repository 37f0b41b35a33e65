"""End to end: simulated engines against the service as it runs in production (gunicorn on
the test database plus a real Celery worker on the configured broker), on whichever
configuration the suite runs in (embedded, or PostgreSQL + Redis).

These need every engine endpoint (records, blobs, mounts). A missing or wrong one fails
them with the simulator's report, never a skip. One test runs with blobs on S3
(SeaweedFS), as the CI does for both configurations."""

import json
import secrets
import subprocess
import sys

import pytest

from enginesim.scenarios import RunOptions, run
from tests.s3 import seaweedfs  # noqa: F401  (fixture)
from tests.support import ROOT, CeleryWorker, LiveService, child_env, free_port

pytestmark = pytest.mark.django_db(transaction=True)


def test_second_engine_hits_first_engines_work_and_nothing_else(live_service, celery_worker_process, token):
    report = run(RunOptions(url=live_service.url + "/magicache", token=token, engines=2,
                            scale=8 * 1024, settle_seconds=30))
    summary = "\n".join(report.lines()) + f"\n--- gunicorn ---\n{live_service.output()[-3000:]}"
    assert report.violations == [], summary
    assert report.wrong_hits == [], summary
    # Engine B found every key engine A exported...
    assert report.hits > 0 and report.misses == 0, summary
    assert report.hits == report.expected_hits + report.unexpected_hits
    # ...and nothing for its own new work: the rest of its keys were looked up and missed.
    assert report.keys_checked > report.hits
    assert report.layers_downloaded > 0 and report.range_reopens > 0, summary
    assert report.mounts_uploaded >= 2 and report.mounts_downloaded >= 1, summary


def test_engine_sim_command_against_the_live_service(live_service, celery_worker_process, token):
    cmd = [sys.executable, "manage.py", "engine_sim", "--url", live_service.url + "/magicache",
           "--token", token, "--scenario", "fleet", "--engines", "3", "--rounds", "2",
           "--scale", "4096", "--seed", "3", "--json"]
    done = subprocess.run(cmd, cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    report = json.loads(done.stdout)
    assert report["ok"] and report["hits"] > 0 and report["wrong_hits"] == []
    assert {"config", "records", "layers", "import", "layerUploadURL", "layer PUT"} <= set(report["calls"])
    assert all(c["p50_ms"] <= c["p99_ms"] for c in report["calls"].values())


def test_read_only_token_imports_but_is_never_asked_for_layers(live_service, ro_token):
    report = run(RunOptions(url=live_service.url + "/magicache", token=ro_token, engines=1,
                            scale=4096, mounts=False))
    assert report.violations == [] and report.wrong_hits == [], "\n".join(report.lines())
    assert report.calls["records"]["count"] == 2 and report.calls["import"]["count"] == 1
    assert report.exported_records == 0 and report.layers_uploaded == 0


def test_seed_demo_starts_what_it_needs_and_leaves_real_cache(transactional_db):
    from accounts.models import Engine, EngineToken, Organization

    Organization.ensure("demo")
    port = free_port()  # nothing listens there, so seed_demo starts its own service
    cmd = [sys.executable, "manage.py", "seed_demo", "--org", "demo", "--engines", "2", "--scale", "4096"]
    done = subprocess.run(cmd, cwd=ROOT, env=child_env(CACHEWEB_BIND=f"127.0.0.1:{port}"),
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert f"Nothing answers at http://127.0.0.1:{port} (CACHEWEB_BIND)" in done.stdout
    assert "Seeded organization 'demo' through a temporary service at http://127.0.0.1:" in done.stdout
    assert Engine.objects.filter(organization__slug="demo").count() == 4
    # The temporary token it seeded with no longer works.
    assert all(t.revoked for t in EngineToken.objects.filter(organization__slug="demo"))


def test_seed_demo_uses_the_service_running_on_cacheweb_bind(live_service, celery_worker_process, org):
    from accounts.models import Engine

    cmd = [sys.executable, "manage.py", "seed_demo", "--org", org.slug, "--engines", "1", "--scale", "4096"]
    done = subprocess.run(cmd, cwd=ROOT, env=child_env(CACHEWEB_BIND=f"127.0.0.1:{live_service.port}"),
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert f"Seeded organization '{org.slug}' through the running service at {live_service.url}" in done.stdout
    assert "temporary service" not in done.stdout
    # The running service's own log shows the engines' calls: it is the one that served them.
    assert f"org={org.slug}" in live_service.output()
    assert Engine.objects.filter(organization=org).count() == 2


def test_seed_demo_refuses_a_service_on_another_database(transactional_db, org, tmp_path):
    from accounts.models import EngineToken

    other = LiveService(DATABASE_URL=f"sqlite:///{tmp_path / 'other.sqlite3'}", CACHEWEB_DATA_DIR=tmp_path / "other")
    try:
        cmd = [sys.executable, "manage.py", "seed_demo", "--org", org.slug, "--engines", "1"]
        done = subprocess.run(cmd, cwd=ROOT, env=child_env(CACHEWEB_BIND=f"127.0.0.1:{other.port}"),
                              capture_output=True, text=True, timeout=60)
    finally:
        other.stop()
    assert done.returncode == 1
    assert f"a cacheweb service answers at {other.url} (CACHEWEB_BIND) but refuses the token" in done.stderr
    assert "Seeded" not in done.stdout
    # The token it issued for the attempt is revoked again.
    issued = EngineToken.objects.filter(organization=org)
    assert issued.count() == 1 and issued.get().revoked


def test_two_engines_through_s3_presigned_urls(seaweedfs, token):  # noqa: F811
    """Blobs on S3 (SeaweedFS, signatures enforced): the engines PUT to presigned URLs with
    the returned checksum header, and read back with Range from the store itself."""
    prefix = "sim" + secrets.token_hex(4)
    service = LiveService(**seaweedfs.env(prefix=prefix))
    worker = CeleryWorker(**seaweedfs.env(prefix=prefix))
    try:
        report = run(RunOptions(url=service.url + "/magicache", token=token, engines=2,
                                scale=8 * 1024, settle_seconds=30))
        summary = "\n".join(report.lines()) + f"\n--- gunicorn ---\n{service.output()[-3000:]}"
    finally:
        worker.stop()
        service.stop()
    assert report.ok and report.misses == 0 and report.hits > 0, summary
    assert report.layers_downloaded > 0 and report.mounts_downloaded >= 1, summary
    listed = seaweedfs.client().list_objects_v2(Bucket=seaweedfs.bucket, Prefix=prefix)
    assert listed.get("KeyCount", 0) >= report.layers_uploaded, summary
