"""The parts cacheweb depends on (database, object store, broker) failing: one place that
says which exceptions mean "a dependency is unavailable" and how that is answered.

An unavailable dependency is never the client's fault and never a bug here: every path
answers 503 with Retry-After, so engines and API clients retry instead of giving up
(engines treat a 500 on /layers or a mount PUT as final). Engine, blob and operator API
paths (cacheweb.urls.MACHINE_PREFIXES) get JSON, never HTML: the engine does not check
the status of a blob GET, so an HTML page would be taken for layer bytes. Pages get a
styled message.

Publishing a Celery task goes through publish() (work that follows a commit goes through
cacheweb.outbox, which calls it): its waits are bounded by the broker settings
(CACHEWEB_BROKER_TIMEOUT, CACHEWEB_BROKER_PUBLISH_RETRIES) and every failure is
BrokerUnavailable.
"""

import logging
import sys

from botocore.exceptions import BotoCoreError
from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import HttpResponse, JsonResponse
from django.template.loader import render_to_string
from kombu.exceptions import OperationalError as KombuOperationalError

from blobs.storage import StoreUnavailable

log = logging.getLogger("cacheweb.dependencies")


class BrokerUnavailable(Exception):
    """A task could not be handed to the broker within the bounded wait."""


try:  # the Redis transport's own errors are not OSErrors
    from redis.exceptions import ConnectionError as _RedisConnectionError
    from redis.exceptions import TimeoutError as _RedisTimeoutError

    _REDIS_ERRORS = (_RedisConnectionError, _RedisTimeoutError)
except ImportError:  # pragma: no cover - redis is in requirements.txt
    _REDIS_ERRORS = ()

# OSError: sockets, and the filesystem broker's directory missing or unwritable.
_PUBLISH_ERRORS = (KombuOperationalError, OSError, *_REDIS_ERRORS)

DATABASE_ERRORS = (OperationalError, InterfaceError)
# BotoCoreError covers connection refused, connect and read timeouts (never a refusal by
# the store, which is a ClientError with a status).
STORE_ERRORS = (StoreUnavailable, BotoCoreError)


def publish(task, *args, retry=True, **options):
    """Queue `task` with `args`, waiting at most the broker's bounded time (with `retry`,
    the publish retry policy's). Keyword arguments are apply_async options (countdown,
    kwargs, ...). Raises BrokerUnavailable."""
    if retry:
        options["retry_policy"] = settings.CELERY_TASK_PUBLISH_RETRY_POLICY
    try:
        return task.apply_async(args, retry=retry, **options)
    except _PUBLISH_ERRORS as exc:
        raise BrokerUnavailable(f"could not queue {task.name}: {type(exc).__name__}: {exc}") from exc


def failed_part(exc):
    """'database', 'storage' or 'broker' when `exc` says that part is unavailable."""
    if isinstance(exc, DATABASE_ERRORS):
        return "database"
    if isinstance(exc, STORE_ERRORS):
        return "storage"
    if isinstance(exc, BrokerUnavailable | KombuOperationalError):
        return "broker"
    return None


MESSAGES = {
    "database": "the database is unavailable",
    "storage": "the object store is unavailable",
    "broker": "the task queue is unavailable",
}


def unavailable_body(part):
    """The JSON answer for machine paths: engines log `error`; `unavailable` names the part."""
    return {"error": f"{MESSAGES[part]}; retry later", "unavailable": part}


def unavailable_response(request, part):
    retry_after = str(settings.UNAVAILABLE_RETRY_AFTER)
    message = MESSAGES[part]
    from cacheweb.urls import MACHINE_PREFIXES  # urls imports views that import this

    if request.path.startswith(MACHINE_PREFIXES):
        response = JsonResponse(unavailable_body(part), status=503)
    else:
        # No request context: the page must render without the database (no user, no
        # session) since that may be what failed.
        html = render_to_string("503.html", {"message": message, "retry_after": retry_after})
        response = HttpResponse(html, status=503, content_type="text/html; charset=utf-8")
    response["Retry-After"] = retry_after
    response["Cache-Control"] = "no-store"
    return response


def response_for_current_exception(request):
    """In an error handler: the 503 for the exception being handled, if a dependency
    failed, else None."""
    exc = sys.exc_info()[1]
    part = failed_part(exc) if exc is not None else None
    if part is None:
        return None
    return unavailable_response(request, part)


class DependencyErrorMiddleware:
    """Views (engine, blob, API, pages) that hit an unavailable dependency answer 503.
    Errors raised by other middleware reach cacheweb.urls.handler500, which does the same."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exc):
        part = failed_part(exc)
        if part is None:
            return None
        log.warning("%s %s: %s unavailable: %s: %s", request.method, request.path, part, type(exc).__name__, exc)
        return unavailable_response(request, part)
