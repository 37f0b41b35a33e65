"""Work that must follow a commit, recorded in the same transaction.

`enqueue` writes (or bumps) an OutboxTask row inside the caller's transaction and
publishes the Celery task once it commits, with no publish retries: a broker that is down
or not answering costs that one bounded attempt, and the row stays for `sweep`, which the
scheduler runs every SWEEP_INTERVAL seconds and which publishes every row still there
CACHEWEB_OUTBOX_RETRY_AFTER seconds after it was due. A task wrapped in `tracked`
deletes its row when it has run, unless a newer enqueue came meanwhile. Tasks must be
safe to run twice: the sweep cannot tell a lost message from a slow one.
"""

import functools
import logging
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, InterfaceError, OperationalError, transaction
from django.db.models import F
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerError

from blobs.storage import StoreUnavailable
from cacheweb.models import OutboxTask

log = logging.getLogger("cacheweb.outbox")

SWEEP_INTERVAL = 30.0
SWEEP_BATCH = 500

# What a task that fails on a dependency retries on (Celery autoretry_for), with back-off.
DEPENDENCY_ERRORS = (OperationalError, InterfaceError, StoreUnavailable, BrokerError, ConnectionError, TimeoutError)
RETRY_OPTIONS = {
    "autoretry_for": DEPENDENCY_ERRORS,
    "retry_backoff": 2,
    "retry_backoff_max": 300,
    "retry_jitter": True,
}


def enqueue(task, args=(), kwargs=None, key=None, countdown=0):
    """Record that `task(*args, **kwargs)` must run once this transaction commits, and
    publish it then. Rows share `key` (default: the task and its arguments): a second
    enqueue before the first task started only bumps the row and publishes nothing."""
    args = list(args)
    kwargs = kwargs or {}
    key = key or task_key(task.name, *args)
    now = timezone.now()
    due = now + timedelta(seconds=countdown + settings.OUTBOX_RETRY_AFTER)
    with transaction.atomic():
        row = OutboxTask.objects.select_for_update().filter(key=key).values_list("version", "started").first()
        if row is None:
            try:
                with transaction.atomic():
                    OutboxTask.objects.create(
                        key=key, task=task.name, args=args, kwargs=kwargs, next_attempt_at=due
                    )
                waiting = False
            except IntegrityError:
                # Another transaction recorded it a moment ago.
                row = (1, 0)  # created, not started: its transaction publishes it
        if row is not None:
            version, started = row
            # A published task that has not started yet will see this change too; the
            # sweep's time is then left as it was, or steady traffic would postpone it
            # for ever while that task is lost.
            waiting = version > started
            fields = {"args": args, "kwargs": kwargs}
            if not waiting:
                fields["next_attempt_at"] = due
            OutboxTask.objects.filter(key=key).update(version=F("version") + 1, **fields)
    if not waiting:
        transaction.on_commit(lambda: publish(task, args, kwargs, countdown))


def task_key(name, *args):
    return ":".join([name, *map(str, args)])


def publish(task, args, kwargs, countdown=0):
    """Send the task once; False (logged) when the broker would not take it, the row then
    waiting for the sweep."""
    from cacheweb.dependencies import publish as publish_bounded

    try:
        publish_bounded(task, *args, kwargs=kwargs, countdown=countdown or None, retry=False)
    except Exception as exc:  # noqa: BLE001 - the row is the retry, whatever the broker raised
        log.warning("could not publish %s%r, left for the outbox sweep: %s", task.name, tuple(args), exc)
        return False
    return True


def tracked(key_of):
    """Decorate a task body so that its outbox row (named by `key_of(*args, **kwargs)`)
    goes once it has returned. An exception (a retry included) keeps the row."""

    def decorate(fn):
        @functools.wraps(fn)
        def run(*args, **kwargs):
            key = key_of(*args, **kwargs)
            version = OutboxTask.objects.filter(key=key).values_list("version", flat=True).first()
            if version is not None:
                OutboxTask.objects.filter(key=key, version=version).update(started=version)
            result = fn(*args, **kwargs)
            if version is not None:
                OutboxTask.objects.filter(key=key, version=version).delete()
            return result

        return run

    return decorate


def defer(key, countdown):
    """The task will retry by itself in `countdown` seconds: the sweep waits for that."""
    OutboxTask.objects.filter(key=key).update(
        next_attempt_at=timezone.now() + timedelta(seconds=countdown + settings.OUTBOX_RETRY_AFTER)
    )


def sweep(now=None):
    """Publish what is still due; stop at the first publish the broker refuses (it is
    down: the next sweep tries again). Returns how many were published."""
    from celery import current_app

    now = now or timezone.now()
    rows = list(OutboxTask.objects.filter(next_attempt_at__lte=now).order_by("next_attempt_at")[:SWEEP_BATCH])
    published = 0
    for row in rows:
        task = current_app.tasks.get(row.task)
        if task is None:
            log.error("outbox row %s names an unknown task %s; dropped", row.key, row.task)
            OutboxTask.objects.filter(pk=row.pk).delete()
            continue
        if not publish(task, row.args, row.kwargs):
            break
        OutboxTask.objects.filter(pk=row.pk, next_attempt_at=row.next_attempt_at).update(
            next_attempt_at=now + timedelta(seconds=settings.OUTBOX_RETRY_AFTER)
        )
        published += 1
    if published:
        log.info("outbox sweep published %d task(s)", published)
    return published
