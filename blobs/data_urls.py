from django.urls import path

from blobs import views

# The built-in storage's data plane, included at /blobs/ by cacheweb/urls.py. Signed
# URLs, no token: engines PUT and GET here exactly what /magicache handed them.
urlpatterns = [
    path("<int:org_id>/<str:digest>", views.blob_data, name="blob-data"),
]
