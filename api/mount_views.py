"""/api/v1/: changing cache mount settings, a mount's switch and size limit and the
organization's mount policy (maintainers). Both bind the forms of mounts.forms, the ones
the dashboard's mount pages post to, so a value is refused with the same message here and
there and no rule is written twice."""

from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, serializers
from rest_framework.response import Response

from api import serializers as out
from api import views
from api.views import ERRORS, OperatorView
from mounts.forms import MAX_PATTERN_LENGTH, MAX_PATTERNS, MountPolicyForm, MountSettingsForm
from mounts.models import CacheMount, MountPolicy, MountSwitch, SyncMode

MAX_BYTES = 2**63 - 1
TEXT, BYTES, LINES = "a string", "a whole number of bytes, or null", "a list of strings"


def patch_form(form_class, instance, data, kinds, actor, to_form=None):
    """`form_class` bound to `instance` with the fields of a PATCH body; the fields not
    given keep their values. JSON types a form would coerce (true or "10" for a byte
    count) are refused here, before it, naming the field; then the form decides."""
    data = views._json_object(data)
    fields = form_class._meta.fields
    errors = {name: "not a setting (one of " + ", ".join(fields) + ")" for name in data if name not in fields}
    for name, value in data.items():
        kind = kinds.get(name)
        if kind == TEXT and not isinstance(value, str):
            errors[name] = TEXT
        elif kind == BYTES and value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            errors[name] = BYTES
        elif kind == LINES and not (
            isinstance(value, list) and all(isinstance(line, str) and "\n" not in line and "\r" not in line for line in value)
        ):
            errors[name] = "a list of strings, each on one line"
    if errors:
        raise exceptions.ValidationError(errors)
    bound = {name: getattr(instance, name) for name in fields} | (to_form(data) if to_form else data)
    form = form_class(bound, instance=instance)
    if not form.is_valid():
        raise exceptions.ValidationError({name: " ".join(errs) for name, errs in form.errors.items()})
    return form.save_by(actor)


# ---- a mount's switch and size limit ---------------------------------------------------


class MountSettingsRequest(serializers.Serializer):
    switch = serializers.ChoiceField(
        choices=MountSwitch.choices, required=False,
        help_text="policy: follow the organization's policy; on: always sync; off: never sync",
    )
    size_limit = serializers.IntegerField(
        min_value=0, max_value=MAX_BYTES, allow_null=True, required=False,
        help_text="largest snapshot accepted, bytes; null: the server default; 0: none",
    )


class MountDetail(views.MountDetail):
    @extend_schema(
        request=MountSettingsRequest,
        responses={200: out.MountDetailSerializer, **ERRORS},
        description=(
            "Switch the mount on or off or back to the organization's policy, or change its size limit "
            "(maintainers), as the dashboard's mount page does. Engines follow it at their next start."
        ),
    )
    def patch(self, request, slug, pk):
        org = self.organization(slug, maintain=True)
        mount = CacheMount.objects.filter(organization=org, pk=pk).first()
        if mount is None:
            raise exceptions.NotFound("no such cache mount")
        patch_form(MountSettingsForm, mount, request.data, {"switch": TEXT, "size_limit": BYTES}, request.user)
        return self.get(request, slug, pk)


# ---- the organization's mount policy ---------------------------------------------------


class MountPolicySerializer(serializers.Serializer):
    mode = serializers.ChoiceField(choices=SyncMode.choices)
    patterns = serializers.ListField(
        child=serializers.CharField(), source="pattern_list",
        help_text="shell-style patterns (go-*, pnpm-store-v?) matched against the whole name in 'patterns' mode",
    )
    size_limit = serializers.IntegerField(
        allow_null=True, help_text="cap on the total of all mounts' current snapshots; null: the server default; 0: none"
    )
    effective_size_limit = serializers.IntegerField(help_text="the cap in force, bytes; 0: none")


class MountPolicyRequest(serializers.Serializer):
    mode = serializers.ChoiceField(
        choices=SyncMode.choices, required=False,
        help_text="all: sync every mount engines report; patterns: only names matching a pattern",
    )
    patterns = serializers.ListField(
        child=serializers.CharField(max_length=MAX_PATTERN_LENGTH), max_length=MAX_PATTERNS, required=False,
        help_text="replaces the list; at least one in 'patterns' mode",
    )
    size_limit = serializers.IntegerField(min_value=0, max_value=MAX_BYTES, allow_null=True, required=False)


def _patterns_as_text(data):
    if "patterns" in data:
        return data | {"patterns": "\n".join(data["patterns"])}
    return data


class MountPolicyDetail(OperatorView):
    @extend_schema(responses={200: MountPolicySerializer, **ERRORS})
    def get(self, request, slug):
        return Response(MountPolicySerializer(MountPolicy.for_organization(self.organization(slug))).data)

    @extend_schema(
        request=MountPolicyRequest,
        responses={200: MountPolicySerializer, **ERRORS},
        description=(
            "Change which mounts engines sync and the organization's size cap (maintainers), as the "
            "dashboard's mounts page does. A mount switched on or off keeps its switch."
        ),
    )
    def patch(self, request, slug):
        org = self.organization(slug, maintain=True)
        policy = patch_form(
            MountPolicyForm, MountPolicy.for_organization(org), request.data,
            {"mode": TEXT, "patterns": LINES, "size_limit": BYTES}, request.user, to_form=_patterns_as_text,
        )
        return Response(MountPolicySerializer(policy).data)
