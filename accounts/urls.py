from django.urls import path

from accounts.views import ConfigView

urlpatterns = [
    path("config", ConfigView.as_view(), name="engine-config"),
]
