from django.urls import path

from records.views import ImportView, LayersView, RecordsView

# Engine endpoints under /magicache/ (see cacheweb/urls.py).
urlpatterns = [
    path("records", RecordsView.as_view(), name="engine-records"),
    path("layers", LayersView.as_view(), name="engine-layers"),
    path("import", ImportView.as_view(), name="engine-import"),
]
