from django.urls import path

from accounts import pages

urlpatterns = [
    path("", pages.home, name="home"),
    path("orgs/<slug:slug>/", pages.organization, name="organization"),
    path("orgs/<slug:slug>/tokens/", pages.tokens, name="tokens"),
    path("orgs/<slug:slug>/tokens/<int:pk>/revoke", pages.revoke_token, name="revoke-token"),
    path("orgs/<slug:slug>/engines/", pages.engines, name="engines"),
]
