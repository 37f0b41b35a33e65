from django.http import HttpResponse
from django.views.decorators.http import require_GET

from activity.metrics import render
from cacheweb.health import ALLOWED, ANONYMOUS, operator_access

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@require_GET
def metrics(request):
    """Prometheus metrics: for the CACHEWEB_METRICS_TOKEN bearer token or a superuser."""
    access = operator_access(request)
    if access == ANONYMOUS:
        response = HttpResponse(
            "metrics need a bearer token or a superuser's session\n", status=401, content_type="text/plain"
        )
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    if access != ALLOWED:
        return HttpResponse("this token or user may not read the metrics\n", status=403, content_type="text/plain")
    return HttpResponse(render(), content_type=CONTENT_TYPE)
