from django.urls import path

from api import pages

urlpatterns = [
    path("tokens/", pages.tokens, name="profile-tokens"),
    path("tokens/<int:pk>/revoke", pages.revoke, name="profile-token-revoke"),
]
