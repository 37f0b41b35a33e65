"""An organization's storage policy in the operator API: read it (members), change its
overrides (maintainers) through retention.services.set_storage_policy, which audits."""

from django.conf import settings
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, serializers
from rest_framework.response import Response

from api.views import ERRORS, OperatorView, _json_object
from retention import services as retention
from retention.forms import MAX_DAYS, MAX_LIMIT
from retention.models import StoragePolicy

FIELDS = ("storage_limit", "unused_after_days")
BOUNDS = {"storage_limit": MAX_LIMIT, "unused_after_days": MAX_DAYS}


class RulesSerializer(serializers.Serializer):
    storage_limit = serializers.IntegerField(help_text="bytes; 0: no limit")
    unused_after_days = serializers.IntegerField(help_text="0: never")
    described = serializers.CharField(help_text="the rules in words")


class StoragePolicySerializer(serializers.Serializer):
    storage_limit = serializers.IntegerField(
        allow_null=True, help_text="this organization's limit in bytes; null: the default; 0: no limit"
    )
    unused_after_days = serializers.IntegerField(
        allow_null=True, help_text="this organization's days; null: the default; 0: never"
    )
    in_force = RulesSerializer(help_text="the rules the next pass applies")
    defaults = RulesSerializer(help_text="CACHEWEB_ORG_STORAGE_LIMIT and CACHEWEB_EVICT_UNUSED_AFTER")
    stored_bytes = serializers.IntegerField(help_text="what counts against the limit: verified blobs")
    grace_seconds = serializers.IntegerField()
    interval_seconds = serializers.IntegerField(help_text="CACHEWEB_GC_INTERVAL")
    next_pass_at = serializers.DateTimeField(allow_null=True, help_text="estimate; null before the first scheduled pass")


class StoragePolicyUpdate(serializers.Serializer):
    storage_limit = serializers.IntegerField(required=False, allow_null=True, min_value=0, max_value=MAX_LIMIT)
    unused_after_days = serializers.IntegerField(required=False, allow_null=True, min_value=0, max_value=MAX_DAYS)


def _rules(policy):
    return {"storage_limit": policy.storage_limit, "unused_after_days": policy.unused_after_days,
            "described": policy.in_words()}


def policy_document(org):
    own = StoragePolicy.for_organization(org)
    return {
        "storage_limit": own.storage_limit,
        "unused_after_days": own.unused_after_days,
        "in_force": _rules(retention.eviction_policy(org)),
        "defaults": _rules(retention.eviction_policy()),
        "stored_bytes": retention.stored_bytes(org),
        "grace_seconds": int(retention.grace(org).total_seconds()),
        "interval_seconds": settings.GC_INTERVAL,
        "next_pass_at": retention.next_pass_at(org),
    }


def validated_update(data):
    """{field: value} of a PATCH body; JSON types checked strictly (no true for 1, no "10")."""
    errors = {name: "not a policy field (one of " + ", ".join(FIELDS) + ")" for name in data if name not in FIELDS}
    for name in FIELDS:
        if name not in data:
            continue
        value = data[name]
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            errors[name] = "a whole number, or null for the default"
        elif value is not None and not 0 <= value <= BOUNDS[name]:
            errors[name] = f"from 0 to {BOUNDS[name]}, or null for the default"
    if errors:
        raise exceptions.ValidationError(errors)
    return {name: data[name] for name in FIELDS if name in data}


class StoragePolicyView(OperatorView):
    @extend_schema(operation_id="storage_policy_retrieve", responses={200: StoragePolicySerializer, **ERRORS})
    def get(self, request, slug):
        return Response(StoragePolicySerializer(policy_document(self.organization(slug))).data)

    @extend_schema(
        operation_id="storage_policy_update",
        request=StoragePolicyUpdate,
        responses={200: StoragePolicySerializer, **ERRORS},
        description=(
            "Change the organization's overrides (maintainers): null follows the environment's default, "
            "0 switches the rule off. The next lifecycle pass applies them. Audited."
        ),
    )
    def patch(self, request, slug):
        org = self.organization(slug, maintain=True)
        retention.set_storage_policy(org, request.user, **validated_update(_json_object(request.data)))
        return Response(StoragePolicySerializer(policy_document(org)).data)
