from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from api import activity_views, audit_views, mount_views, policy_views, views

org = "orgs/<slug:slug>/"

urlpatterns = [
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
    path("orgs/", views.OrganizationList.as_view(), name="api-orgs"),
    path(org, views.OrganizationDetail.as_view(), name="api-org"),
    path(org + "engines/", views.EngineList.as_view(), name="api-engines"),
    path(org + "engines/<int:pk>/", views.EngineDetail.as_view(), name="api-engine"),
    path(org + "activity/", activity_views.ActivityView.as_view(), name="api-activity"),
    path(org + "lifecycle/preview/", views.LifecyclePreview.as_view(), name="api-lifecycle-preview"),
    path(org + "lifecycle/run/", views.LifecycleRun.as_view(), name="api-lifecycle-run"),
    path(org + "lifecycle/passes/", audit_views.LifecyclePasses.as_view(), name="api-lifecycle-passes"),
    path(org + "storage-policy/", policy_views.StoragePolicyView.as_view(), name="api-storage-policy"),
    path(org + "audit/", audit_views.AuditLog.as_view(), name="api-audit"),
    path(org + "steps/", views.StepList.as_view(), name="api-steps"),
    path(org + "steps/evict/", views.StepEviction.as_view(), name="api-steps-evict"),
    path(org + "steps/<int:pk>/", views.StepDetail.as_view(), name="api-step"),
    path(org + "blobs/", views.BlobList.as_view(), name="api-blobs"),
    path(org + "blobs/<str:digest>/", views.BlobDetail.as_view(), name="api-blob"),
    path(org + "engine-tokens/", views.EngineTokenList.as_view(), name="api-engine-tokens"),
    path(org + "engine-tokens/<int:pk>/", views.EngineTokenDetail.as_view(), name="api-engine-token"),
    path(org + "mounts/", views.MountList.as_view(), name="api-mounts"),
    path(org + "mounts/<int:pk>/", mount_views.MountDetail.as_view(), name="api-mount"),
    path(org + "mount-policy/", mount_views.MountPolicyDetail.as_view(), name="api-mount-policy"),
    path(org + "mounts/<int:pk>/evict/", views.MountEviction.as_view(), name="api-mount-evict"),
]
