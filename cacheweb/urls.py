from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.http import HttpResponsePermanentRedirect, JsonResponse
from django.templatetags.static import static
from django.urls import include, path
from django.views import defaults

from accounts.throttle import ThrottledAdminAuthenticationForm, ThrottledAuthenticationForm
from activity.views import metrics
from cacheweb.dependencies import response_for_current_exception
from cacheweb.health import healthz

admin.site.login_form = ThrottledAdminAuthenticationForm


def favicon(request):
    """Browsers ask for /favicon.ico whatever the page says."""
    return HttpResponsePermanentRedirect(static("favicon.svg"))


ENGINE_PREFIX = "/magicache/"
API_PREFIX = "/api/"

engine_api = [
    path("", include("accounts.urls")),
    path("", include("records.urls")),
    path("", include("blobs.urls")),
    path("", include("mounts.urls")),
]

urlpatterns = [
    path("magicache/", include(engine_api)),
    path("healthz", healthz, name="healthz"),
    path("metrics", metrics, name="metrics"),
    path("favicon.ico", favicon),
    path("api/v1/", include("api.urls")),
    path("blobs/", include("blobs.data_urls")),
    path("admin/", admin.site.urls),
    path("login/", auth_views.LoginView.as_view(form_class=ThrottledAuthenticationForm), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("profile/", include("api.page_urls")),
    path("", include("accounts.page_urls")),
]


# Engines log response bodies and operator API clients parse them: give them JSON, not
# an HTML error page, on every path an engine calls (the engine API and the built-in blob
# URLs) and on the operator API.
MACHINE_PREFIXES = (ENGINE_PREFIX, "/blobs/", API_PREFIX)


def _for_machines(request):
    # request.path needs no Host check: a DisallowedHost request gets here too.
    return request.path.startswith(MACHINE_PREFIXES)


def handler400(request, exception=None):
    """What Django raises as a SuspiciousOperation or BadRequest: a Host outside
    ALLOWED_HOSTS, too many query or form fields, a malformed multipart body..."""
    if _for_machines(request):
        return JsonResponse({"error": f"bad request: {exception}" if exception else "bad request"}, status=400)
    return defaults.bad_request(request, exception)


def handler403(request, exception=None):
    if _for_machines(request):
        return JsonResponse({"error": str(exception) or "forbidden"}, status=403)
    return defaults.permission_denied(request, exception)


def handler404(request, exception=None):
    if _for_machines(request):
        return JsonResponse({"error": "no such endpoint"}, status=404)
    return defaults.page_not_found(request, exception)


def handler500(request):
    # Also where an error raised by a middleware (a session read while the database is
    # down) ends up: an unavailable dependency is a 503, whatever raised it.
    unavailable = response_for_current_exception(request)
    if unavailable is not None:
        return unavailable
    if _for_machines(request):
        return JsonResponse({"error": "internal error"}, status=500)
    return defaults.server_error(request)
