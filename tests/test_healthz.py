"""/healthz reports database, blob storage and broker; a real worker's heartbeat."""

import os
import time

import pytest
from django.utils import timezone

from cacheweb import health
from cacheweb.models import WorkerHeartbeat
from tests.support import CeleryWorker


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
        worker.stop(grace=20)
