from django.urls import path  # noqa: F401

# Engine endpoints under /magicache/ (see cacheweb/urls.py).
urlpatterns = []
