from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.http import JsonResponse
from django.urls import include, path
from django.views import defaults

from cacheweb.health import healthz

ENGINE_PREFIX = "/magicache/"
API_PREFIX = "/api/"
# Clients of these read JSON: errors are JSON there too.
JSON_PREFIXES = (ENGINE_PREFIX, API_PREFIX)

engine_api = [
    path("", include("accounts.urls")),
    path("", include("records.urls")),
    path("", include("blobs.urls")),
    path("", include("mounts.urls")),
]

urlpatterns = [
    path("magicache/", include(engine_api)),
    path("healthz", healthz, name="healthz"),
    path("api/v1/", include("api.urls")),
    path("blobs/", include("blobs.data_urls")),
    path("admin/", admin.site.urls),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("profile/", include("api.page_urls")),
    path("", include("accounts.page_urls")),
]


# Engines log response bodies and API clients parse them: JSON, not an HTML error page.
def handler404(request, exception=None):
    if request.path.startswith(JSON_PREFIXES):
        return JsonResponse({"error": "no such endpoint"}, status=404)
    return defaults.page_not_found(request, exception)


def handler500(request):
    if request.path.startswith(JSON_PREFIXES):
        return JsonResponse({"error": "internal error"}, status=500)
    return defaults.server_error(request)
