from django.urls import path

from blobs import views

# Engine endpoints under /magicache/ (see cacheweb/urls.py): exact names, no slash.
urlpatterns = [
    path("layerUploadURL", views.LayerUploadURLView.as_view(), name="layer-upload-url"),
    path("layerDownloadURL", views.LayerDownloadURLView.as_view(), name="layer-download-url"),
]
