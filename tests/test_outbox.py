"""Work that must follow a commit survives a broker outage (cacheweb.outbox): recorded in
the committing transaction, published after it, published again by the sweep, deleted
by the task once done."""

from datetime import timedelta

import pytest
from celery.exceptions import Retry
from django.db import OperationalError
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerError

from cacheweb import outbox
from cacheweb.models import OutboxTask
from mounts import tasks as mount_tasks
from mounts.models import MountSnapshot, SnapshotState
from records import importconfig
from records.models import ImportSnapshot, Record
from records.tasks import rebuild_import
from tests.blob_helpers import Transport
from tests.buildkit_oracle import descriptor, key, post_layers, post_records, result, root_key, sha, store_blob
from tests.test_mounts import blob, offer

IMAGE = root_key(sha("docker-image://alpine"))


class Broker:
    """The publishing side of the broker: up (messages recorded) or down (refused the way
    kombu refuses when it cannot connect, with publish retries off)."""

    def __init__(self):
        self.down = False
        self.sent = []

    def send(self, amqp, name, message, **kwargs):
        if self.down:
            raise BrokerError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        headers = message.headers if hasattr(message, "headers") else message[0]
        self.sent.append((name, headers["argsrepr"]))


@pytest.fixture
def broker(monkeypatch):
    broker = Broker()
    # On the app's own AMQP object: send_task_message is a cached property there, so an
    # earlier test's real publish would otherwise have cached the real sender.
    amqp = rebuild_import.app.amqp
    monkeypatch.setattr(amqp, "send_task_message", lambda producer, name, message, **kw: broker.send(amqp, name, message, **kw))
    return broker


def deliver(client, org, token, django_capture_on_commit_callbacks, name):
    """An engine's /records, its blob upload and its /layers."""
    post_records(client, token, [key(IMAGE, result(name))], [])
    store_blob(org, sha(name), 1)
    record = Record.objects.get(organization=org, has_result=False)
    with django_capture_on_commit_callbacks(execute=True):
        answer = post_layers(client, token, [{"RecordDigest": record.identity, "Layers": [descriptor(sha(name), 1)]}])
    assert answer.status_code == 200, answer.content
    assert answer.json()["Accepted"] == [record.identity]


def test_a_rebuild_the_broker_refused_is_kept_and_published_by_the_sweep(
    client, org, token, broker, django_capture_on_commit_callbacks
):
    broker.down = True
    deliver(client, org, token, django_capture_on_commit_callbacks, "one")
    [row] = OutboxTask.objects.all()
    assert (row.task, row.args) == ("records.tasks.rebuild_import", [org.pk])
    # A second change while the first is waiting coalesces into the same row, and is
    # not published again: the waiting task (or the sweep) covers it.
    post_records(client, token, [key(root_key(sha("docker-image://busybox")), result("two"))], [])
    assert OutboxTask.objects.count() == 1
    assert broker.sent == []

    broker.down = False
    assert outbox.sweep() == 0  # not due yet: a published message may still be on its way
    assert outbox.sweep(now=timezone.now() + timedelta(seconds=121)) == 1
    assert broker.sent == [("records.tasks.rebuild_import", repr((org.pk,)))]
    # The worker runs it: the import is built and the row is gone.
    rebuild_import(org.pk)
    assert not OutboxTask.objects.exists()
    snapshot = ImportSnapshot.objects.get(organization=org)
    assert snapshot.built_generation == snapshot.generation


def test_the_sweep_stops_at_a_broker_still_down_and_loses_nothing(org, broker):
    from django.db import transaction

    with transaction.atomic():
        outbox.enqueue(rebuild_import, [org.pk])
        outbox.enqueue(mount_tasks.index_snapshot_contents, [12345])
    broker.down = True
    later = timezone.now() + timedelta(seconds=300)
    assert outbox.sweep(now=later) == 0
    assert OutboxTask.objects.count() == 2
    broker.down = False
    assert outbox.sweep(now=later) == 2
    assert sorted(name for name, _ in broker.sent) == ["mounts.index_snapshot_contents", "records.tasks.rebuild_import"]
    # Published again only after another retry interval.
    assert outbox.sweep(now=later + timedelta(seconds=60)) == 0


def test_a_change_made_while_the_task_ran_keeps_its_row(org, broker, monkeypatch, django_capture_on_commit_callbacks):
    from django.db import transaction

    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        outbox.enqueue(rebuild_import, [org.pk])
    real = importconfig.rebuild

    def rebuild_with_a_change_meanwhile(organization, force=False):
        with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
            outbox.enqueue(rebuild_import, [organization.pk])
        return real(organization, force)

    monkeypatch.setattr(importconfig, "rebuild", rebuild_with_a_change_meanwhile)
    rebuild_import(org.pk)
    # The change came after the task read the state: it is published and its row stays.
    assert OutboxTask.objects.filter(key=f"records.tasks.rebuild_import:{org.pk}").exists()
    assert len(broker.sent) == 2
    monkeypatch.setattr(importconfig, "rebuild", real)
    rebuild_import(org.pk)
    assert not OutboxTask.objects.exists()


def test_a_task_failing_on_the_database_retries_and_keeps_its_row(org, broker, monkeypatch):
    from django.db import transaction

    with transaction.atomic():
        outbox.enqueue(rebuild_import, [org.pk])

    def database_down(organization, force=False):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(importconfig, "rebuild", database_down)
    broker.sent.clear()
    # As the worker runs it: the failure becomes a retry, published with a delay.
    rebuild_import.push_request(id="in-a-worker", args=[org.pk], kwargs={}, retries=0, is_eager=False, called_directly=False)
    try:
        with pytest.raises(Retry) as retry:
            rebuild_import.run(org.pk)
    finally:
        rebuild_import.pop_request()
    assert isinstance(retry.value.exc, OperationalError)
    assert 0 <= retry.value.when <= 2  # the first back-off step, jittered
    assert [name for name, _ in broker.sent] == ["records.tasks.rebuild_import"]
    # The row stays for the sweep, should the retries run out.
    assert OutboxTask.objects.count() == 1


@pytest.mark.usefixtures("builtin")
def test_mount_offer_and_upload_answer_200_while_the_broker_is_down(
    client, org, token, broker, django_capture_on_commit_callbacks
):
    broker.down = True
    data, digest = blob()
    with django_capture_on_commit_callbacks(execute=True):
        answer = offer(client, token, "go-mod", digest, len(data))
    assert answer.status_code == 200, answer.content
    answer = answer.json()
    assert answer["Skip"] is False
    with django_capture_on_commit_callbacks(execute=True):
        reply = Transport(client).put(answer["URL"], data, answer["Headers"])
    assert reply.status == 200, reply.body
    snapshot = MountSnapshot.objects.get()
    assert snapshot.state == SnapshotState.VERIFIED
    # The confirmation (settled by the PUT itself) and the contents index wait in the outbox.
    assert set(OutboxTask.objects.values_list("task", flat=True)) == {
        "mounts.confirm_snapshot_upload",
        "mounts.index_snapshot_contents",
    }
    broker.down = False
    assert outbox.sweep(now=timezone.now() + timedelta(days=1)) == 2
    mount_tasks.index_snapshot_contents(snapshot.pk)
    mount_tasks.confirm_snapshot_upload(snapshot.pk)
    assert not OutboxTask.objects.exists()
    snapshot.refresh_from_db()
    # The index ran (these bytes are no tar archive, which it records as such).
    assert snapshot.contents_state == "invalid"
