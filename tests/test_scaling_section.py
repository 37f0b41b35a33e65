"""README, "Scaling out", followed as written where it can run here: PostgreSQL (the test
database), Redis (the configured broker), blobs on S3 (SeaweedFS), one secret key for
every process; `manage.py bootstrap --no-token` once, then two `serve --only web`, one
`serve --only worker` and one `serve --only beat`. One engine exports through the first
web node, a second engine imports through the other and must hit that work.

Only the PostgreSQL + Redis pass can run it; on SQLite or the embedded broker it skips."""

import secrets
import subprocess
import sys
import time

import pytest
import requests
from django.conf import settings
from django.db import connection

from accounts.models import EngineToken, Organization
from cacheweb.models import WorkerHeartbeat
from enginesim.scenarios import RunOptions, run
from tests.s3 import seaweedfs  # noqa: F401  (fixture)
from tests.support import ROOT, Process, child_env, database_url_for_children, free_port, stop_all

pytestmark = pytest.mark.django_db(transaction=True)

MANAGE = [sys.executable, "manage.py"]
METRICS_TOKEN = secrets.token_urlsafe(16)  # lets /healthz show what each node is using


def scaled_out_env(store, **extra):
    """The README's exports, pointed at this test's services."""
    return child_env(
        DATABASE_URL=database_url_for_children(),
        CELERY_BROKER_URL=settings.CELERY_BROKER_URL,
        CACHEWEB_SECRET_KEY=settings.SECRET_KEY,
        CACHEWEB_ALLOWED_HOSTS="127.0.0.1",
        CACHEWEB_METRICS_TOKEN=METRICS_TOKEN,
        **store.env(prefix="scale" + secrets.token_hex(6)),
        **extra,
    )


def wait_healthy(url, node, timeout=45):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert node.proc.poll() is None, f"{node.name} exited:\n{node.output()[-4000:]}"
        try:
            answer = requests.get(url + "/healthz", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=5)
            if answer.status_code == 200:
                return answer
        except requests.ConnectionError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{node.name} never became healthy:\n{node.output()[-4000:]}")


@pytest.mark.slow  # about a minute: the scheduler's first heartbeat comes after 30 s
@pytest.mark.skipif(not settings.CELERY_BROKER_URL.startswith("redis"),
                    reason="the configured broker is not Redis; the scaled-out setup runs Celery on Redis")
@pytest.mark.skipif(not settings.DATABASE_URL, reason="the tests run on SQLite; the scaled-out setup needs PostgreSQL")
def test_the_scaling_out_section_as_written(seaweedfs):  # noqa: F811
    assert connection.vendor == "postgresql"
    base_env = scaled_out_env(seaweedfs)
    done = subprocess.run([*MANAGE, "bootstrap", "--no-token"], cwd=ROOT, env=base_env,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Engine token" not in done.stdout
    org = Organization.objects.get(slug="default")
    assert not EngineToken.objects.filter(organization=org).exists()
    token = EngineToken.issue(org, label="scaling test")[1]

    nodes, urls = [], []
    try:
        for i in range(2):
            port = free_port()
            env = {**base_env, "CACHEWEB_BIND": f"127.0.0.1:{port}", "CACHEWEB_WEB_WORKERS": "1",
                   "CACHEWEB_ACCESS_LOG": "1"}
            nodes.append(Process(f"web{i + 1}", [*MANAGE, "serve", "--only", "web"], env))
            urls.append(f"http://127.0.0.1:{port}")
        nodes.append(Process("worker", [*MANAGE, "serve", "--only", "worker"], base_env))
        nodes.append(Process("beat", [*MANAGE, "serve", "--only", "beat"], base_env))
        for url, node in zip(urls, nodes):
            health = wait_healthy(url, node).json()
            # Each web node checks the database, S3 and the broker it was given.
            assert health["database"]["vendor"] == "postgresql", health
            assert health["storage"] == {**health["storage"], "backend": "s3", "bucket": seaweedfs.bucket}, health
            assert health["broker"]["transport"] == "redis", health

        report = run(RunOptions(url=urls[0] + "/magicache", urls=(urls[0] + "/magicache", urls[1] + "/magicache"),
                                token=token, engines=2, scale=4096, settle_seconds=30))
        summary = "\n".join(report.lines()) + "".join(
            f"\n--- {n.name} ---\n{n.output()[-2500:]}" for n in nodes)
        assert report.violations == [] and report.wrong_hits == [], summary
        assert report.exported_records > 0 and report.layers_uploaded > 0, summary
        assert report.hits > 0 and report.misses == 0, summary
        assert report.layers_downloaded > 0, summary
        # The export went through web 1 and the import through web 2: each node's access
        # log has the engine calls of its own engine.
        web1, web2 = nodes[0].output(), nodes[1].output()
        assert " /magicache/records " in web1 and " /magicache/records " in web2, summary
        assert " /magicache/import " in web2, summary
        for node in nodes[2:]:
            assert node.proc.poll() is None, f"{node.name} exited:\n{node.output()[-4000:]}"
        # Blobs went to S3, not to the data directory.
        objects = seaweedfs.client().list_objects_v2(Bucket=seaweedfs.bucket, Prefix=base_env["CACHEWEB_S3_PREFIX"])
        assert objects.get("KeyCount", 0) > 0
        # The scheduler's heartbeat goes through Redis to the worker, which writes it to
        # PostgreSQL (every 30 s).
        deadline = time.monotonic() + 45
        while not WorkerHeartbeat.objects.exists():
            assert time.monotonic() < deadline, summary
            time.sleep(1)
        health = requests.get(urls[1] + "/healthz", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=5)
        assert health.json()["worker"]["last_heartbeat"], health.text
    finally:
        stop_all(nodes, grace=40)
    assert all(node.proc.returncode is not None for node in nodes)
