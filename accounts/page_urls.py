from django.urls import path

from accounts import pages
from audit import pages as audit_pages
from dashboard import pages as cache_pages
from dashboard import policy as policy_pages
from dashboard import steps as step_pages

urlpatterns = [
    path("", pages.home, name="home"),
    path("orgs/<slug:slug>/", pages.organization, name="organization"),
    path("orgs/<slug:slug>/tokens/", pages.tokens, name="tokens"),
    path("orgs/<slug:slug>/tokens/<int:pk>/revoke", pages.revoke_token, name="revoke-token"),
    path("orgs/<slug:slug>/engines/", pages.engines, name="engines"),
    path("orgs/<slug:slug>/engines/<int:pk>/", pages.engine, name="engine"),
    path("orgs/<slug:slug>/cache/", cache_pages.overview, name="cache"),
    path("orgs/<slug:slug>/cache/blobs/", cache_pages.blobs, name="cache-blobs"),
    path("orgs/<slug:slug>/cache/blobs/<str:digest>/evict", cache_pages.evict_blob, name="cache-blob-evict"),
    path("orgs/<slug:slug>/cache/steps/", step_pages.step_list, name="cache-steps"),
    path("orgs/<slug:slug>/cache/steps/evict", step_pages.evict_matching, name="cache-steps-evict"),
    path("orgs/<slug:slug>/cache/steps/<int:pk>/", step_pages.step_page, name="cache-step"),
    path("orgs/<slug:slug>/cache/steps/<int:pk>/evict", step_pages.evict_step, name="cache-step-evict"),
    path("orgs/<slug:slug>/cache/layers/<int:pk>/", step_pages.layer_page, name="cache-layer"),
    path("orgs/<slug:slug>/cache/mounts/", cache_pages.mounts, name="cache-mounts"),
    path("orgs/<slug:slug>/cache/mounts/<int:pk>/", cache_pages.mount, name="cache-mount"),
    path("orgs/<slug:slug>/cache/mounts/<int:pk>/evict", cache_pages.evict_mount, name="cache-mount-evict"),
    path("orgs/<slug:slug>/cache/policy/", policy_pages.policy, name="cache-policy"),
    path("orgs/<slug:slug>/audit/", audit_pages.audit_log, name="audit"),
]
