"""/healthz reports database, blob storage and broker; a real worker's heartbeat."""

import time

import pytest
from django.utils import timezone

from cacheweb import health
from cacheweb.models import WorkerHeartbeat


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
