"""/healthz reports database, blob storage and broker; a real worker's heartbeat."""

import os
import time

import pytest
from django.utils import timezone

from cacheweb import health
from cacheweb.models import WorkerHeartbeat
from tests.support import CeleryWorker


METRICS = "metrics-token-for-tests"


@pytest.fixture(autouse=True)
def metrics_token(settings):
    settings.METRICS_TOKEN = METRICS


class DetailedClient:
    """/healthz as a monitoring system with the metrics token calls it."""

    def __init__(self, client):
        self.inner = client

    def get(self, path):
        return self.inner.get(path, HTTP_AUTHORIZATION=f"Bearer {METRICS}")

    def post(self, path):
        return self.inner.post(path)


@pytest.fixture
def client(client):
    return DetailedClient(client)


ANONYMOUS_OK = {"status": "ok", "database": {"ok": True}, "storage": {"ok": True}, "broker": {"ok": True}}


@pytest.mark.django_db
class TestDetailsAreForSuperusersAndTheMetricsToken:
    def test_anonymous_gets_the_status_only(self, client):
        for auth in ({}, {"HTTP_AUTHORIZATION": "Bearer wrong"}, {"HTTP_AUTHORIZATION": METRICS}):
            resp = client.inner.get("/healthz", **auth)
            assert resp.status_code == 200
            assert resp.json() == ANONYMOUS_OK

    def test_failing_is_still_503_for_anyone(self, client, monkeypatch):
        def broken():
            raise OSError("secret path /srv/x")

        monkeypatch.setitem(health.CHECKS, "storage", broken)
        resp = client.inner.get("/healthz")
        assert resp.status_code == 503
        # Which part fails, and nothing of what it said.
        assert resp.json() == {**ANONYMOUS_OK, "status": "failing", "storage": {"ok": False}}
        assert "secret" not in resp.content.decode()

    def test_no_metrics_token_configured_means_none_matches(self, client, settings):
        settings.METRICS_TOKEN = ""
        assert client.inner.get("/healthz", HTTP_AUTHORIZATION="Bearer ").json() == ANONYMOUS_OK

    def test_superuser_and_staff(self, client, django_user_model):
        staff = django_user_model.objects.create_user("staff", password="pw-staff-123", is_staff=True)
        client.inner.force_login(staff)
        assert client.inner.get("/healthz").json() == ANONYMOUS_OK
        root = django_user_model.objects.create_superuser("root", password="pw-root-123")
        client.inner.force_login(root)
        assert client.inner.get("/healthz").json()["database"]["ok"] is True

    def test_metrics_token_sees_details(self, client):
        assert client.get("/healthz").json()["database"]["ok"] is True


@pytest.mark.django_db
class TestHealthz:
    def test_all_fine(self, client):
        resp = client.get("/healthz")
        assert resp.status_code == 200
        data = resp.json()
        assert data["status"] == "ok"
        assert all(data[part]["ok"] for part in ("database", "storage", "broker"))

    def test_broken_part_is_503(self, client, monkeypatch):
        def broken():
            raise OSError("disk on fire")

        monkeypatch.setitem(health.CHECKS, "storage", broken)
        resp = client.get("/healthz")
        assert resp.status_code == 503
        data = resp.json()
        assert data["status"] == "failing"
        assert data["storage"]["ok"] is False and "disk on fire" in data["storage"]["error"]
        assert data["database"]["ok"] is True

    def test_unreachable_broker_is_503(self, client, settings):
        settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"
        settings.CELERY_BROKER_TRANSPORT_OPTIONS = {}
        resp = client.get("/healthz")
        assert resp.status_code == 503
        assert resp.json()["broker"]["ok"] is False

    def test_blob_disk_below_its_free_space_threshold_fails(self, client, settings, builtin, tmp_path):
        (tmp_path / "blobs").mkdir()
        settings.BLOB_DISK_MIN_FREE = 1 << 62
        data = client.get("/healthz").json()
        assert data["status"] == "failing"
        assert data["storage"]["ok"] is False and "bytes free on the blob disk" in data["storage"]["error"]
        settings.BLOB_DISK_MIN_FREE = 0
        data = client.get("/healthz").json()
        assert data["storage"]["ok"] is True and data["storage"]["free_bytes"] > 0

    def test_read_only_blob_disk_fails(self, client, builtin, monkeypatch, tmp_path):
        import errno

        (tmp_path / "blobs").mkdir()

        def read_only(*args, **kwargs):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))

        monkeypatch.setattr(health.tempfile, "mkstemp", read_only)
        resp = client.get("/healthz")
        monkeypatch.undo()
        assert resp.status_code == 503
        assert "Read-only file system" in resp.json()["storage"]["error"]

    def test_database_down_is_a_failing_part_not_an_error_page(self, client, monkeypatch):
        from django.db import OperationalError

        def down():
            raise OperationalError("connection refused")

        monkeypatch.setitem(health.CHECKS, "database", down)
        resp = client.inner.get("/healthz")
        assert resp.status_code == 503
        assert resp.json()["database"] == {"ok": False}

    def test_reports_worker_heartbeat(self, client):
        WorkerHeartbeat.objects.create(hostname="w1", beat_at=timezone.now())
        assert client.get("/healthz").json()["worker"]["hostname"] == "w1"

    def test_post_is_405(self, client):
        assert client.post("/healthz").status_code == 405


@pytest.mark.django_db(transaction=True)
def test_real_worker_consumes_the_broker(celery_worker_process):
    """A task queued on the configured broker (filesystem, Redis or RabbitMQ) is run by a
    real worker process, which writes to the shared database."""
    from cacheweb.tasks import heartbeat

    heartbeat.delay(hostname="queued-by-test")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if WorkerHeartbeat.objects.filter(hostname="queued-by-test").exists():
            return
        time.sleep(0.3)
    pytest.fail("the worker did not run the task:\n" + celery_worker_process.output()[-3000:])


AMQP_URL = os.environ.get("CACHEWEB_TEST_AMQP_URL")


@pytest.mark.skipif(not AMQP_URL, reason="RabbitMQ is tested in CI's scaled-out pass (CACHEWEB_TEST_AMQP_URL)")
@pytest.mark.django_db(transaction=True)
def test_real_worker_consumes_rabbitmq(client):
    """The same, with RabbitMQ as the broker: a worker started on it runs a task sent to it,
    and /healthz sees the broker."""
    from celery import current_app

    from cacheweb.tasks import heartbeat

    worker = CeleryWorker(CELERY_BROKER_URL=AMQP_URL)
    try:
        with current_app.connection_for_write(AMQP_URL) as conn:
            heartbeat.apply_async(kwargs={"hostname": "via-rabbitmq"}, connection=conn)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if WorkerHeartbeat.objects.filter(hostname="via-rabbitmq").exists():
                break
            time.sleep(0.3)
        else:
            pytest.fail("the worker did not run the task:\n" + worker.output()[-3000:])
    finally:
        worker.stop()
