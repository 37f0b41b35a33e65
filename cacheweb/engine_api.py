"""What every engine endpoint shares: JSON in and out, token auth, errors, one log line."""

import logging
import time

from django.conf import settings
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import APIView, exception_handler

from accounts.auth import EngineTokenAuthentication
from activity import attribution, recording

log = logging.getLogger("cacheweb.engine")


def json_exception_handler(exc, context):
    """DRF errors as {"error": "..."} so engines log a readable message."""
    response = exception_handler(exc, context)
    if response is None:
        return None
    if response.status_code == 503 and not response.has_header("Retry-After"):
        # A 503 is a dependency that failed (api.views.StoreFailed): say when to retry.
        response["Retry-After"] = str(settings.UNAVAILABLE_RETRY_AFTER)
    detail = response.data
    if isinstance(detail, dict) and set(detail) == {"detail"}:
        message = str(detail["detail"])
    elif isinstance(detail, list | dict):
        message = "invalid request"
        response.data = {"error": message, "fields": detail}
        return response
    else:
        message = str(detail)
    response.data = {"error": message}
    return response


class ReadOnlyToken(exceptions.PermissionDenied):
    default_detail = "this engine token is read-only"


def require_body_object(data):
    """Engine bodies are JSON objects; an empty body counts as an empty object."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise exceptions.ParseError("request body must be a JSON object")
    return data


class EngineAPIView(APIView):
    """Base for the /magicache endpoints.

    After authentication `request.auth` is the EngineToken and `self.org` its
    organization. Subclasses that write set `writes = True`: a read-only token then gets
    403 before the handler runs, unless the subclass handles read-only itself.
    """

    authentication_classes = [EngineTokenAuthentication]
    endpoint = ""
    writes = False

    def initial(self, request, *args, **kwargs):
        self._started = time.monotonic()
        self.tally = recording.Tally()
        self._tally_token = recording.current_tally.set(self.tally)
        super().initial(request, *args, **kwargs)
        if request.auth is None:
            raise exceptions.NotAuthenticated("engine token required (HTTP Basic, token as user name)")
        self.org = request.auth.organization
        self.tally.organization_id = self.org.pk
        if self.writes and request.auth.read_only:
            raise ReadOnlyToken()

    def body(self, request):
        return require_body_object(request.data)

    @property
    def engine(self):
        """attribution.Guess of the engine making this call, or None (see attribution)."""
        if not hasattr(self, "_engine"):
            self._engine = attribution.guess(self.request.auth, self.request.META.get("REMOTE_ADDR"))
        return self._engine

    @engine.setter
    def engine(self, guess):
        self._engine = guess

    def count(self, name, value=1, label=""):
        """Add to this call's activity counts, written once when the call ends."""
        self.tally.add(name, value, label)

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        started = getattr(self, "_started", None)
        elapsed = (time.monotonic() - started) * 1000 if started else 0.0
        token = request.auth
        tally = getattr(self, "tally", None)
        engine = self.engine if token is not None else None
        if tally is not None:
            recording.current_tally.reset(self._tally_token)
            if token is not None:
                tally.add_latency(self.endpoint or "other", elapsed / 1000)
                tally.flush(token.organization_id, engine.pk if engine else 0)
        log.info(
            "engine call org=%s engine=%s token=%s endpoint=%s status=%s duration_ms=%.1f",
            token.organization.slug if token else "-",
            engine.engine_id if engine and engine.engine_id else "-",
            token.prefix if token else "-",
            self.endpoint or request.path,
            response.status_code,
            elapsed,
        )
        return response


def ok(data):
    return Response(data, status=200)
