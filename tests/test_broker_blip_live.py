"""A Redis blip costs the Celery worker a reconnect, never its life, and no task is lost.

kombu 5.7.0's redis transport, closing a channel that holds unacknowledged messages after
its connection let go of the transport, raised AttributeError("'NoneType' object has no
attribute 'hostname'"), which the worker takes as unrecoverable; cacheweb.celery patches
that restore (see _leave_unacked_when_detached)."""

import socket
import threading
import time
import uuid

import pytest
from django.conf import settings
from kombu import Connection, Exchange, Queue

from cacheweb.models import WorkerHeartbeat
from cacheweb.tasks import heartbeat
from tests.support import CeleryWorker

pytestmark = pytest.mark.skipif(not settings.CELERY_BROKER_URL.startswith("redis://"),
                                reason="the blip is Redis's")


class BlipProxy:
    """TCP between the worker and Redis that can be cut: every connection reset, and new
    ones reset as soon as accepted until it is restored. (Closing the port instead lets
    a reconnecting client on loopback connect to itself and hold the port.)"""

    def __init__(self, host, port):
        self.target = (host, port)
        self.port = None
        self.lock = threading.Lock()
        self.sockets = []
        self.up = True
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    @staticmethod
    def _reset(s):
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
            s.close()
        except OSError:
            pass

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.up:
                self._reset(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a, b):
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self):
        self.up = False
        with self.lock:
            for s in self.sockets:
                self._reset(s)
            self.sockets = []

    def restore(self):
        self.up = True

    def close(self):
        self.cut()
        self.listener.close()


def _await(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_channel_closed_after_its_connection_keeps_its_unacked_messages():
    """The mechanism, in-process: what killed the worker now leaves the message in the
    broker's unacked set, from which the visibility-timeout restore brings it back."""
    name = f"blip-{uuid.uuid4().hex[:8]}"
    queue = Queue(name, Exchange(name), name)
    with Connection(settings.CELERY_BROKER_URL) as producer:
        producer.Producer().publish({"n": 1}, exchange=queue.exchange, routing_key=name, declare=[queue])
    consumer = Connection(settings.CELERY_BROKER_URL)
    channel = consumer.channel()
    try:
        message = queue(channel).get(no_ack=False)
        assert message.payload == {"n": 1}
        unacked_key = channel.unacked_key
        consumer.transport.client = None  # what Connection._close does before the channel closes
        channel.close()  # raised AttributeError 'hostname' unpatched
        with Connection(settings.CELERY_BROKER_URL) as check:
            client = check.channel().client
            assert client.hexists(unacked_key, message.delivery_tag)
            client.hdel(unacked_key, message.delivery_tag)
            client.zrem(check.channel().unacked_index_key, message.delivery_tag)
    finally:
        with Connection(settings.CELERY_BROKER_URL) as cleanup:
            queue(cleanup.channel()).delete()


def test_the_worker_survives_redis_blips_and_no_recorded_work_is_lost(transactional_db):
    """Blips with rebuilds held unacknowledged by the worker (waiting for their ETA). A
    restore attempted while Redis is unreachable leaves them in the broker's unacked set
    (back after its visibility timeout); the outbox sweep publishes them long before."""
    from datetime import timedelta
    from urllib.parse import urlsplit

    from django.db import transaction
    from django.utils import timezone

    from accounts.models import Organization
    from cacheweb import outbox
    from cacheweb.models import OutboxTask
    from records.models import ImportSnapshot
    from records.tasks import rebuild_import

    url = urlsplit(settings.CELERY_BROKER_URL)
    assert not url.username and not url.password, "the test proxies a broker without credentials"
    proxy = BlipProxy(url.hostname or "127.0.0.1", url.port or 6379)
    worker = CeleryWorker(CELERY_BROKER_URL=url._replace(netloc=f"127.0.0.1:{proxy.port}").geturl())
    orgs = [Organization.ensure(f"blip-{n}") for n in range(3)]
    try:
        _await(lambda: " ready." in worker.output(), 60, "the worker to start")
        for blip in range(2):
            with transaction.atomic():
                for org in orgs:
                    outbox.enqueue(rebuild_import, [org.pk], countdown=3)
            _await(lambda: worker.output().count(" received") >= 3 * (blip + 1), 20, "the worker to reserve them")
            proxy.cut()
            time.sleep(1)
            proxy.restore()
            heartbeat.delay(hostname=f"after-{blip}")
            _await(lambda: WorkerHeartbeat.objects.filter(hostname=f"after-{blip}").exists(), 60,
                   f"a task published after blip {blip}")
            assert worker.proc.poll() is None, worker.output()[-3000:]
            # What beat does every 30 s, once the rows are due again.
            outbox.sweep(now=timezone.now() + timedelta(seconds=settings.OUTBOX_RETRY_AFTER + 10))
            _await(lambda: not OutboxTask.objects.exists(), 60, f"the rebuilds held across blip {blip}")
            assert ImportSnapshot.objects.filter(organization__in=orgs, built_generation__gte=1).count() == 3
        output = worker.output()
        assert "Unrecoverable error" not in output
        assert output.count("Connection to broker lost") >= 2
    finally:
        worker.stop()
        proxy.close()
