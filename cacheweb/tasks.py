import socket

from celery import shared_task
from django.utils import timezone

from cacheweb.models import WorkerHeartbeat


@shared_task(name="cacheweb.tasks.heartbeat", ignore_result=True)
def heartbeat(hostname=None):
    WorkerHeartbeat.objects.update_or_create(
        hostname=hostname or socket.gethostname(), defaults={"beat_at": timezone.now()}
    )


@shared_task(name="cacheweb.tasks.sweep_outbox", ignore_result=True)
def sweep_outbox():
    from cacheweb import outbox

    outbox.sweep()
