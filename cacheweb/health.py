"""GET /healthz: is every part this service needs reachable?"""

import hmac
import logging
import os
import tempfile
import time

from django.conf import settings
from django.core.files.storage import storages
from django.db import connection
from django.http import JsonResponse
from django.utils import timezone
from django.views.decorators.http import require_GET
from kombu import Connection

from cacheweb.dependencies import DATABASE_ERRORS
from cacheweb.models import WorkerHeartbeat

log = logging.getLogger(__name__)


class DiskFull(Exception):
    """The blob disk has less free space than CACHEWEB_BLOB_DISK_MIN_FREE."""


def check_database():
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return {"vendor": connection.vendor}


def check_storage():
    storage = storages["blobs"]
    if hasattr(storage, "connection"):
        storage.connection.meta.client.head_bucket(Bucket=storage.bucket_name)
        return {"backend": "s3", "bucket": storage.bucket_name}
    location = storage.location
    storage.listdir("")
    # A write probe of its own each time: a read-only disk (remounted after errors) fails
    # it, where rewriting one old file might not.
    fd, probe = tempfile.mkstemp(dir=location, prefix=".healthz.")
    try:
        os.write(fd, b"ok")
    finally:
        os.close(fd)
        os.unlink(probe)
    disk = os.statvfs(location)
    free = disk.f_bavail * disk.f_frsize
    if free < settings.BLOB_DISK_MIN_FREE:
        # Uploads get 507 below this line too (blobs.storage: the same check).
        raise DiskFull(f"{free} bytes free on the blob disk, below {settings.BLOB_DISK_MIN_FREE}")
    return {"backend": "filesystem", "location": str(location), "free_bytes": free}


def check_broker():
    with Connection(
        settings.CELERY_BROKER_URL,
        transport_options=settings.CELERY_BROKER_TRANSPORT_OPTIONS,
        connect_timeout=settings.BROKER_TIMEOUT,
    ) as conn:
        conn.ensure_connection(max_retries=1, timeout=settings.BROKER_TIMEOUT)
        transport = conn.transport.driver_type
    folder = settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("data_folder_in")
    if transport == "filesystem" and folder:
        # Connecting to the filesystem broker checks nothing: a task is a file written here.
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".healthz.", suffix=".probe")
        os.close(fd)
        os.unlink(probe)
    return {"transport": transport}


def worker_state():
    beat = WorkerHeartbeat.objects.order_by("-beat_at").first()
    if beat is None:
        return {"last_heartbeat": None}
    return {
        "last_heartbeat": beat.beat_at.isoformat(),
        "seconds_ago": round((timezone.now() - beat.beat_at).total_seconds(), 1),
        "hostname": beat.hostname,
    }


CHECKS = {"database": check_database, "storage": check_storage, "broker": check_broker}


# What a request shows to be let see operational details (/healthz's, /metrics).
ALLOWED, ANONYMOUS, REFUSED = "allowed", "anonymous", "refused"


def operator_access(request, database_ok=True):
    """ALLOWED for the right CACHEWEB_METRICS_TOKEN as a bearer token or a superuser's
    session; REFUSED for another token or a session of someone else; ANONYMOUS for
    neither. The token is checked first: it needs no database, the session does."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        wanted = settings.METRICS_TOKEN
        if wanted and hmac.compare_digest(value.strip().encode(), wanted.encode()):
            return ALLOWED
        return REFUSED
    if not database_ok:  # no session to read, and no reason to wait for it again
        return ANONYMOUS
    try:
        if request.user.is_authenticated:
            return ALLOWED if request.user.is_superuser else REFUSED
    except DATABASE_ERRORS:  # the session is in the database, which /healthz reports on
        return ANONYMOUS
    return ANONYMOUS


def may_see_details(request, database_ok=True):
    """Superusers and the metrics token see what each part says; others whether it is ok."""
    return operator_access(request, database_ok) == ALLOWED


@require_GET
def healthz(request):
    result, healthy = {}, True
    for name, check in CHECKS.items():
        started = time.monotonic()
        try:
            info = check()
            result[name] = {"ok": True, **info}
        except Exception as exc:  # a health check reports every failure, whatever it is
            log.warning("health check %s failed: %s", name, exc)
            healthy = False
            result[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        result[name]["ms"] = round((time.monotonic() - started) * 1000, 1)
    if not result["database"]["ok"]:
        # The heartbeat is in the database: asking again would wait its timeout twice.
        result["worker"] = {"error": "database unavailable"}
    else:
        try:
            result["worker"] = worker_state()
        except Exception as exc:
            result["worker"] = {"error": str(exc)}
    result["status"] = "ok" if healthy else "failing"
    if not may_see_details(request, database_ok=result["database"]["ok"]):
        # Which part fails, never what it said (paths, bucket and host names, errors).
        result = {"status": result["status"], **{name: {"ok": result[name]["ok"]} for name in CHECKS}}
    return JsonResponse(result, status=200 if healthy else 503)
