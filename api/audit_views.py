"""The audit log and the storage lifecycle's record in the operator API: the same
selectors as the dashboard's audit and policy pages (audit.selectors, retention.services)."""

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, serializers

from api.pagination import paged
from api.views import ERRORS, PAGING, OperatorView
from audit import selectors
from audit.models import Action, ActorKind, AuditEntry
from retention import services as retention
from retention.models import LifecyclePass


class AuditEntrySerializer(serializers.ModelSerializer):
    actor = serializers.CharField(help_text="who, as the dashboard shows it")
    user = serializers.CharField(source="actor_name", allow_blank=True, help_text="the user name, when a user acted")

    class Meta:
        model = AuditEntry
        fields = ["id", "at", "actor_kind", "actor", "user", "action", "target", "bytes_freed", "details"]


class LifecyclePassSerializer(serializers.ModelSerializer):
    counts = serializers.DictField(child=serializers.IntegerField(), help_text="per kind, items deleted (or, dry, would be)")
    bytes = serializers.DictField(child=serializers.IntegerField(), help_text="per blob kind, bytes")
    items = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        help_text="per kind, the names of the items, up to 100",
    )

    class Meta:
        model = LifecyclePass
        fields = ["id", "started_at", "finished_at", "dry_run", "run_by", "counts", "bytes", "freed_bytes", "kept",
                  "error", "items"]


class AuditLog(OperatorView):
    @extend_schema(
        operation_id="audit_list",
        parameters=[
            OpenApiParameter("kind", {"type": "string", "enum": list(Action.values)}, description="the action"),
            OpenApiParameter("actor", {"type": "string", "enum": list(ActorKind.values)}, description="who acted"),
            OpenApiParameter("user", str, description="entries by this user name (one the log names)"),
            *PAGING,
        ],
        responses={200: paged(AuditEntrySerializer), **ERRORS},
        description="The organization's audit log, newest first, as the dashboard's audit page shows it.",
    )
    def get(self, request, slug):
        org = self.organization(slug)
        try:
            query = selectors.AuditQuery.from_params(request.query_params, org)
        except selectors.AuditQuery.Invalid as exc:
            raise exceptions.ValidationError(exc.errors) from None
        rows, pager = self.page(selectors.entries(org, query))
        return pager.get_paginated_response(AuditEntrySerializer(rows, many=True).data)


class LifecyclePasses(OperatorView):
    @extend_schema(
        operation_id="lifecycle_passes_list",
        parameters=PAGING,
        responses={200: paged(LifecyclePassSerializer), **ERRORS},
        description="The storage lifecycle passes over the organization, newest first (kept CACHEWEB_AUDIT_DAYS).",
    )
    def get(self, request, slug):
        org = self.organization(slug)
        rows, pager = self.page(retention.passes(org))
        return pager.get_paginated_response(LifecyclePassSerializer(rows, many=True).data)
