"""GET /healthz: is every part this service needs reachable?"""

import hmac
import logging
import time

from django.conf import settings
from django.core.files.storage import storages
from django.db import connection
from django.http import JsonResponse
from django.utils import timezone
from django.views.decorators.http import require_GET
from kombu import Connection

from cacheweb.models import WorkerHeartbeat

log = logging.getLogger(__name__)
BROKER_TIMEOUT = 3


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
    probe = storage.path(".healthz")
    with open(probe, "w") as f:
        f.write("ok")
    return {"backend": "filesystem", "location": str(location)}


def check_broker():
    with Connection(
        settings.CELERY_BROKER_URL,
        transport_options=settings.CELERY_BROKER_TRANSPORT_OPTIONS,
        connect_timeout=BROKER_TIMEOUT,
    ) as conn:
        conn.ensure_connection(max_retries=1, timeout=BROKER_TIMEOUT)
        return {"transport": conn.transport.driver_type}


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


def operator_access(request):
    """ALLOWED for a superuser's session or the right CACHEWEB_METRICS_TOKEN as a bearer
    token; REFUSED for another token or a session of someone else; ANONYMOUS for neither."""
    if request.user.is_authenticated and request.user.is_superuser:
        return ALLOWED
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        wanted = settings.METRICS_TOKEN
        if wanted and hmac.compare_digest(value.strip().encode(), wanted.encode()):
            return ALLOWED
        return REFUSED
    return REFUSED if request.user.is_authenticated else ANONYMOUS


def may_see_details(request):
    """Superusers and the metrics token see what each part says; others whether it is ok."""
    return operator_access(request) == ALLOWED


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
    try:
        result["worker"] = worker_state()
    except Exception as exc:
        result["worker"] = {"error": str(exc)}
    result["status"] = "ok" if healthy else "failing"
    if not may_see_details(request):
        # Which part fails, never what it said (paths, bucket and host names, errors).
        result = {"status": result["status"], **{name: {"ok": result[name]["ok"]} for name in CHECKS}}
    return JsonResponse(result, status=200 if healthy else 503)
