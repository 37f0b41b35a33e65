from django.urls import path

from mounts import views

# Engine endpoints under /magicache/ (see cacheweb/urls.py): exact names, no slash.
urlpatterns = [
    path("cacheMountConfig", views.CacheMountConfigView.as_view(), name="cache-mount-config"),
    path("cacheMountUploadURL", views.CacheMountUploadURLView.as_view(), name="cache-mount-upload-url"),
]
