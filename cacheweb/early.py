"""Refuse before reading: requests that will be refused are answered before their body.

A request to /magicache/ without a valid engine token, and a PUT to a built-in blob URL
whose signature, expiry, method or organization is wrong, would otherwise have its
whole body read first (ChunkedBodyMiddleware spools chunked bodies before Django runs,
and gunicorn drains what the application left unread on a kept-alive connection). This
WSGI wrapper, outside ChunkedBodyMiddleware, checks them from the headers and the URL
alone, answers with a JSON error, and tells gunicorn to close the connection, so that a
client announcing gigabytes sends none of them.
"""

import json
import logging
import re

from django.conf import settings
from django.core.exceptions import SuspiciousOperation
from django.db import close_old_connections
from django.http import QueryDict

from cacheweb.dependencies import DATABASE_ERRORS, unavailable_body

log = logging.getLogger("cacheweb.early")

ENGINE_PREFIX = "/magicache/"
BLOB_PATH = re.compile(r"/blobs/(?P<org_id>[0-9]+)/(?P<digest>[^/]+)")


def close_connection_after(environ):
    """Ask gunicorn not to reuse the connection (its Body marks a failed read this way:
    where the next request starts is then unknown). Other servers have no such flag."""
    body = environ.get("wsgi.input")
    if type(body).__name__ == "Body" and hasattr(body, "failed"):
        body.failed = True


def json_refusal(environ, start_response, status, message, extra_headers=(), fields=None):
    close_connection_after(environ)
    body = json.dumps(fields or {"error": message}).encode()
    start_response(
        status,
        [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
         *extra_headers],
    )
    return [body]


def _engine_refusal(environ):
    from accounts.auth import ENVIRON_KEY, TokenRefused, resolve_token

    try:
        environ[ENVIRON_KEY] = resolve_token(environ.get("HTTP_AUTHORIZATION", ""))
    except TokenRefused as exc:
        return exc.message
    finally:
        # Outside Django's request cycle: give the connection back as it would.
        close_old_connections()
    return None


def _blob_put_refusal(environ):
    from blobs import services, signing

    match = BLOB_PATH.fullmatch(environ.get("PATH_INFO", ""))
    if match is None:
        return None  # not a blob URL: Django answers 404 without reading
    try:
        query = QueryDict(environ.get("QUERY_STRING", ""))
    except SuspiciousOperation as exc:  # TooManyFieldsSent
        return "400 Bad Request", f"bad request: {exc}"
    try:
        services.validate_digest(match["digest"])
        signing.verify(int(match["org_id"]), match["digest"], "PUT", query)
    except (services.InvalidDigest, signing.SignatureError) as exc:
        return "403 Forbidden", str(exc)
    return None


class RefuseBeforeReading:
    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path.startswith(ENGINE_PREFIX):
            try:
                message = _engine_refusal(environ)
            except DATABASE_ERRORS as exc:
                # Django's handlers are not around this: answer the 503 they would.
                log.warning("engine call %s: database unavailable: %s", path, exc)
                return json_refusal(
                    environ, start_response, "503 Service Unavailable", "",
                    [("Retry-After", str(settings.UNAVAILABLE_RETRY_AFTER)), ("Cache-Control", "no-store")],
                    fields=unavailable_body("database"),
                )
            if message is not None:
                log.warning("engine call %s refused before reading its body: %s", path, message)
                return json_refusal(
                    environ, start_response, "401 Unauthorized", message,
                    [("WWW-Authenticate", 'Basic realm="cacheweb"')],
                )
        elif path.startswith("/blobs/") and environ.get("REQUEST_METHOD") == "PUT":
            refusal = _blob_put_refusal(environ)
            if refusal is not None:
                log.warning("blob PUT %s refused before reading its body: %s", path, refusal[1])
                return json_refusal(environ, start_response, *refusal)
        return self.app(environ, start_response)
