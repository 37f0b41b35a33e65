"""The operator API, /api/v1/: the dashboard's reads and evictions as JSON.

Every organization object is reached through accounts.scoping.organization_for (outsiders
404, viewers 403 on writes), and every listing and eviction calls the same selectors and
services as the dashboard pages (records.steps, records.eviction, dashboard.queries,
blobs.services, mounts.services, accounts.engines, retention.services), and settings are
validated by the dashboard's own form (accounts.forms): no query or rule lives here.
"""

from django.db.models import F
from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, permissions, serializers, status
from rest_framework.authentication import SessionAuthentication
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.engines import DEFAULT_ENGINE_SORT, engine_detail, engine_listing, engine_sorts, with_activity
from accounts.forms import OrganizationSettingsForm
from accounts.models import EngineToken
from accounts.scoping import organization_for, visible_organizations
from api import serializers as out
from api.auth import ApiTokenAuthentication
from api.models import ApiToken
from api.pagination import MAX_PAGE_SIZE, ApiPagination, paged
from audit import services as audit
from audit.models import Action
from blobs.services import delete_blob
from blobs.storage import StoreUnavailable
from dashboard import queries
from mounts.models import CacheMount
from mounts.services import evict_mount
from records import eviction, steps
from records.digests import could_start_a_digest, digest_prefix
from retention import services as retention

# S3 not answering or a disk refusing the unlink: the dashboard reports the same.
STORE_FAILURES = (StoreUnavailable, OSError)


class ReadOnlyApiToken(exceptions.PermissionDenied):
    default_detail = "this API token is read-only"


class StoreFailed(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "the blob store did not answer"


class TokenMayWrite(permissions.BasePermission):
    """A read-only API token reads only, whatever its user may do."""

    def has_permission(self, request, view):
        if request.method in permissions.SAFE_METHODS:
            return True
        if isinstance(request.auth, ApiToken) and request.auth.read_only:
            raise ReadOnlyApiToken()
        return True


class OperatorView(APIView):
    authentication_classes = [ApiTokenAuthentication, SessionAuthentication]
    permission_classes = [permissions.IsAuthenticated, TokenMayWrite]

    def organization(self, slug, maintain=False):
        return organization_for(self.request.user, slug, maintain=maintain)

    def page(self, queryset):
        """(the page's rows as a sliced queryset, the paginator)."""
        paginator = ApiPagination()
        return paginator.paginate(queryset, self.request), paginator


ERRORS = {400: out.ErrorSerializer, 401: out.ErrorSerializer, 403: out.ErrorSerializer, 404: out.ErrorSerializer}
PAGING = [
    OpenApiParameter("page", {"type": "integer", "minimum": 1}, description="page number, from 1"),
    OpenApiParameter(
        "page_size", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE}, description="rows per page (50)"
    ),
]


# ---- organizations ---------------------------------------------------------------------


class OrganizationList(OperatorView):
    @extend_schema(
        operation_id="orgs_list", parameters=PAGING, responses={200: paged(out.OrganizationSerializer), **ERRORS}
    )
    def get(self, request):
        rows, pager = self.page(visible_organizations(request.user).order_by("slug"))
        return pager.get_paginated_response(out.OrganizationSerializer(rows, many=True).data)


def _json_object(data):
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise exceptions.ParseError("the body must be a JSON object")
    return data


def settings_form(org, data):
    """The dashboard's settings form bound to `org` with the fields of a PATCH body; the
    fields not given keep their values. Type mistakes a form would coerce (true, 1.5,
    "10" for a period; 5 for a name) are refused here, before it."""
    fields = OrganizationSettingsForm._meta.fields
    errors = {name: "not a setting (one of " + ", ".join(fields) + ")" for name in data if name not in fields}
    for name, value in data.items():
        if name == "name" and not isinstance(value, str):
            errors[name] = "a string"
        elif name in fields and name != "name" and (isinstance(value, bool) or not isinstance(value, int)):
            errors[name] = "a whole number of seconds"
    if errors:
        raise exceptions.ValidationError(errors)
    bound = {name: getattr(org, name) for name in fields} | data
    return OrganizationSettingsForm(bound, instance=org)


class OrganizationDetail(OperatorView):
    @extend_schema(responses={200: out.OrganizationSerializer, **ERRORS})
    def get(self, request, slug):
        return Response(out.OrganizationSerializer(self.organization(slug)).data)

    @extend_schema(
        request=out.OrganizationUpdateSerializer,
        responses={200: out.OrganizationSerializer, **ERRORS},
        description=(
            "Change the organization's settings (maintainers), as the dashboard's settings form does. "
            "Engines pick them up at their next start."
        ),
    )
    def patch(self, request, slug):
        org = self.organization(slug, maintain=True)
        form = settings_form(org, _json_object(request.data))
        if not form.is_valid():
            raise exceptions.ValidationError({name: " ".join(errs) for name, errs in form.errors.items()})
        form.save()
        audit.record_form_changes(org, request.user, Action.SETTINGS_CHANGED, form)
        return Response(out.OrganizationSerializer(org).data)


# ---- engines ---------------------------------------------------------------------------


class EngineList(OperatorView):
    @extend_schema(
        operation_id="engines_list",
        parameters=[
            OpenApiParameter("sort", str, enum=engine_sorts(), description=f"default {DEFAULT_ENGINE_SORT}"),
            *PAGING,
        ],
        responses={200: paged(out.EngineSerializer), **ERRORS},
    )
    def get(self, request, slug):
        org = self.organization(slug)
        sort = (request.query_params.get("sort") or "").strip() or DEFAULT_ENGINE_SORT
        if sort not in engine_sorts():
            raise exceptions.ValidationError({"sort": "one of " + ", ".join(engine_sorts())})
        rows, pager = self.page(engine_listing(org, sort))
        return pager.get_paginated_response(out.EngineSerializer(with_activity(org, rows), many=True).data)


class EngineDetail(OperatorView):
    @extend_schema(responses={200: out.EngineSerializer, **ERRORS})
    def get(self, request, slug, pk):
        engine = engine_detail(self.organization(slug), pk)
        if engine is None:
            raise Http404("no such engine")
        return Response(out.EngineSerializer(engine).data)


# ---- build steps -----------------------------------------------------------------------


def step_query(params):
    try:
        return steps.StepQuery.from_params(params)
    except steps.InvalidStepQuery as exc:
        raise exceptions.ValidationError(exc.errors) from None


class StepList(OperatorView):
    @extend_schema(
        operation_id="steps_list",
        parameters=[out.StepSearchSerializer, *PAGING],
        responses={200: paged(out.StepSerializer), **ERRORS},
    )
    def get(self, request, slug):
        org = self.organization(slug)
        query = step_query(request.query_params)
        rows, pager = self.page(steps.step_listing(org, query))
        return pager.get_paginated_response(out.StepSerializer(steps.describe_steps(org, rows), many=True).data)


class StepDetail(OperatorView):
    @extend_schema(responses={200: out.StepDetailSerializer, **ERRORS})
    def get(self, request, slug, pk):
        org = self.organization(slug)
        detail = steps.step_detail(org, pk)
        if detail is None:
            raise Http404("no such step")
        return Response(out.StepDetailSerializer(detail).data)

    @extend_schema(responses={200: out.EvictedSerializer, **ERRORS}, description="Evict the step (maintainers).")
    def delete(self, request, slug, pk):
        org = self.organization(slug, maintain=True)
        detail = steps.step_detail(org, pk)
        if detail is None or not detail.results:
            raise Http404("no such step")
        done = eviction.evict_steps(org, [detail.record.pk], actor=request.user)
        return Response(out.EvictedSerializer(done).data)


def _search_body(data):
    """The JSON body of a bulk eviction as StepQuery parameters (strings), and dry_run."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise exceptions.ParseError("the body must be a JSON object")
    errors = {}
    params = {}
    for name in steps.StepQuery.FIELDS:
        value = data.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, str | int):
            errors[name] = "a string or a whole number"
        else:
            params[name] = str(value)
    dry_run = data.get("dry_run", False)
    if not isinstance(dry_run, bool):
        errors["dry_run"] = "true or false"
    expected = data.get("expected_count")
    if expected is not None and (isinstance(expected, bool) or not isinstance(expected, int) or expected < 0):
        errors["expected_count"] = "a whole number"
    if errors:
        raise exceptions.ValidationError(errors)
    return params, dry_run, expected


class StepEvictRequest(out.StepEvictRequestSerializer):
    expected_count = serializers.IntegerField(
        required=False, min_value=0, help_text="refuse (409) unless the search matches exactly this many steps"
    )


class SearchChanged(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "the search matches another number of steps than expected_count"


class StepEviction(OperatorView):
    @extend_schema(
        request=StepEvictRequest,
        responses={200: out.StepEvictionSerializer, 409: out.ErrorSerializer, **ERRORS},
        description=(
            "Evict every step the search matches (maintainers). With dry_run, nothing changes and the answer "
            "lists exactly the steps and blobs the same call without dry_run evicts. An empty search is refused."
        ),
    )
    def post(self, request, slug):
        org = self.organization(slug, maintain=True)
        params, dry_run, expected = _search_body(request.data)
        query = step_query(params)
        try:
            record_ids = eviction.steps_to_evict(org, query, expected)
        except eviction.SearchRefused as exc:
            raise exceptions.ValidationError({"search": str(exc)}) from None
        except eviction.SearchChanged as exc:
            raise SearchChanged(str(exc)) from None
        if dry_run:
            plan = eviction.plan_steps(org, record_ids)
            answer = {
                "dry_run": True,
                "step_ids": plan.record_ids,
                "results": len(plan.result_ids),
                "blobs": plan.blobs,
                "freed_bytes": plan.freed_bytes,
                "evicted": None,
            }
        else:
            done = eviction.evict_steps(org, record_ids, actor=request.user)
            answer = {
                "dry_run": False,
                "step_ids": sorted(record_ids),
                "results": done.results,
                "blobs": done.blobs_deleted,
                "freed_bytes": done.freed_bytes,
                "evicted": done,
            }
        return Response(out.StepEvictionSerializer(answer).data)


# ---- blobs -----------------------------------------------------------------------------


def _blob_sorts():
    return [key for name in queries.BLOB_SORTS for key in (name, f"-{name}")]


class BlobDeleted(serializers.Serializer):
    digest = serializers.CharField()
    freed_bytes = serializers.IntegerField()
    results_affected = serializers.IntegerField(help_text="results that leave /import until exported again")


class BlobList(OperatorView):
    @extend_schema(
        operation_id="blobs_list",
        parameters=[
            OpenApiParameter("sort", str, enum=_blob_sorts(), description="default -size"),
            OpenApiParameter("q", str, description="digest prefix, with or without sha256:"),
            *PAGING,
        ],
        responses={200: paged(out.BlobSerializer), **ERRORS},
    )
    def get(self, request, slug):
        org = self.organization(slug)
        errors = {}
        sort = (request.query_params.get("sort") or "").strip() or queries.DEFAULT_BLOB_SORT
        if sort not in _blob_sorts():
            errors["sort"] = "one of " + ", ".join(_blob_sorts())
        search = (request.query_params.get("q") or "").strip()
        if search and not could_start_a_digest(digest_prefix(search)):
            errors["q"] = "not the start of a sha256 digest (hex digits, with or without 'sha256:')"
        if errors:
            raise exceptions.ValidationError(errors)
        rows, _ = queries.blob_listing(org, sort, search)
        rows, pager = self.page(rows)
        return pager.get_paginated_response(out.BlobSerializer(queries.describe_blobs(org, rows), many=True).data)


class BlobDetail(OperatorView):
    @extend_schema(responses={200: out.BlobSerializer, **ERRORS})
    def get(self, request, slug, digest):
        blob = queries.blob_usage(self.organization(slug), digest)
        if blob is None:
            raise Http404("no such blob")
        return Response(out.BlobSerializer(blob).data)

    @extend_schema(responses={200: BlobDeleted, 503: out.ErrorSerializer, **ERRORS})
    def delete(self, request, slug, digest):
        org = self.organization(slug, maintain=True)
        blob = queries.blob_usage(org, digest)
        if blob is None:
            raise Http404("no such blob")
        try:
            freed = delete_blob(org, blob.digest, actor=request.user)
        except STORE_FAILURES as exc:
            raise StoreFailed(f"nothing was evicted: the blob store did not answer ({exc})") from None
        return Response({"digest": blob.digest, "freed_bytes": freed, "results_affected": blob.result_count})


# ---- engine tokens ---------------------------------------------------------------------


class EngineTokenCreate(serializers.Serializer):
    label = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    read_only = serializers.BooleanField(required=False, default=False)


class EngineTokenList(OperatorView):
    @extend_schema(
        operation_id="engine_tokens_list", parameters=PAGING, responses={200: paged(out.EngineTokenSerializer), **ERRORS}
    )
    def get(self, request, slug):
        org = self.organization(slug)
        rows = org.tokens.order_by(F("revoked_at").asc(nulls_first=True), "-created_at", "-pk")
        rows, pager = self.page(rows)
        return pager.get_paginated_response(out.EngineTokenSerializer(rows, many=True).data)

    @extend_schema(
        request=EngineTokenCreate,
        responses={201: out.NewEngineTokenSerializer, **ERRORS},
        description="Create an engine token (maintainers); its value is in this answer only.",
    )
    def post(self, request, slug):
        org = self.organization(slug, maintain=True)
        if request.data is not None and not isinstance(request.data, dict):
            raise exceptions.ParseError("the body must be a JSON object")
        form = EngineTokenCreate(data=request.data or {})
        form.is_valid(raise_exception=True)
        fields = form.validated_data
        row, value = EngineToken.issue(org, read_only=fields["read_only"], label=fields["label"], actor=request.user)
        row.token = value
        return Response(out.NewEngineTokenSerializer(row).data, status=status.HTTP_201_CREATED)


class EngineTokenDetail(OperatorView):
    @extend_schema(responses={200: out.EngineTokenSerializer, **ERRORS}, description="Revoke the token (maintainers).")
    def delete(self, request, slug, pk):
        org = self.organization(slug, maintain=True)
        row = EngineToken.objects.filter(organization=org, pk=pk).first()
        if row is None:
            raise Http404("no such engine token")
        row.revoke(actor=request.user)
        return Response(out.EngineTokenSerializer(row).data)


# ---- cache mounts ----------------------------------------------------------------------


class MountList(OperatorView):
    @extend_schema(
        operation_id="mounts_list", parameters=PAGING, responses={200: paged(out.MountSerializer), **ERRORS}
    )
    def get(self, request, slug):
        org = self.organization(slug)
        rows, pager = self.page(queries.mount_listing(org))
        return pager.get_paginated_response(
            out.MountSerializer(queries.with_current_snapshots(org, rows), many=True).data
        )


class MountDetail(OperatorView):
    @extend_schema(responses={200: out.MountDetailSerializer, **ERRORS})
    def get(self, request, slug, pk):
        org = self.organization(slug)
        found = queries.with_current_snapshots(org, queries.mount_listing(org).filter(pk=pk))
        if not found:
            raise Http404("no such cache mount")
        mount = found[0]
        _, mount.snapshot_list = queries.mount_snapshots(mount)
        return Response(out.MountDetailSerializer(mount).data)


class MountEviction(OperatorView):
    @extend_schema(
        request=None,
        responses={200: out.MountEvictedSerializer, 503: out.ErrorSerializer, **ERRORS},
        description="Delete every snapshot of the mount and the blobs nothing else needs (maintainers).",
    )
    def post(self, request, slug, pk):
        org = self.organization(slug, maintain=True)
        mount = CacheMount.objects.select_related("organization").filter(organization=org, pk=pk).first()
        if mount is None:
            raise Http404("no such cache mount")
        try:
            deleted, freed = evict_mount(mount, actor=request.user)
        except STORE_FAILURES as exc:
            raise StoreFailed(
                f"the snapshots were deleted, but the blob store did not answer ({exc}); "
                "the blobs it kept are unreferenced now and go at the next lifecycle pass"
            ) from None
        return Response(
            {
                "snapshots_deleted": deleted,
                "blobs_deleted": freed,
                "freed_bytes": sum(size or 0 for size in freed.values()),
            }
        )


# ---- storage lifecycle -----------------------------------------------------------------

DEFAULT_ITEM_LIMIT = 50
MAX_ITEM_LIMIT = 500


class LifecycleFailed(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "the lifecycle pass failed"


def _item_limit(text):
    """The `limit` query parameter, items listed per kind: a whole number from 0 to
    MAX_ITEM_LIMIT."""
    text = (text or "").strip()
    if not text:
        return DEFAULT_ITEM_LIMIT
    if not (text.isascii() and text.isdigit() and len(text) < 10) or int(text) > MAX_ITEM_LIMIT:
        raise exceptions.ValidationError({"limit": f"a whole number from 0 to {MAX_ITEM_LIMIT}"})
    return int(text)


LIMIT_HELP = f"rows listed per kind, 0 to {MAX_ITEM_LIMIT} ({DEFAULT_ITEM_LIMIT}); counts and bytes cover all"


class LifecycleRunRequest(serializers.Serializer):
    dry_run = serializers.BooleanField(required=False, default=False)
    limit = serializers.IntegerField(required=False, min_value=0, max_value=MAX_ITEM_LIMIT, help_text=LIMIT_HELP)


class LifecyclePreview(OperatorView):
    @extend_schema(
        parameters=[
            OpenApiParameter(
                "limit", {"type": "integer", "minimum": 0, "maximum": MAX_ITEM_LIMIT}, description=LIMIT_HELP
            )
        ],
        responses={200: out.LifecycleReportSerializer, **ERRORS},
        description=(
            "What the next storage lifecycle pass would delete, deleting nothing: released and failed mount "
            "snapshots, stale pending exports, unreferenced blobs and evicted ones. A run right after, with "
            "nothing changed in between, deletes exactly these."
        ),
    )
    def get(self, request, slug):
        org = self.organization(slug)
        limit = _item_limit(request.query_params.get("limit"))
        return Response(out.LifecycleReportSerializer(retention.preview(org, limit=limit)).data)


class LifecycleRun(OperatorView):
    @extend_schema(
        request=LifecycleRunRequest,
        responses={200: out.LifecycleReportSerializer, 503: out.ErrorSerializer, **ERRORS},
        description=(
            "Run the storage lifecycle pass over the organization now (maintainers) and answer what it deleted; "
            "with dry_run, what it would delete."
        ),
    )
    def post(self, request, slug):
        org = self.organization(slug, maintain=True)
        data = _json_object(request.data)
        errors = {name: "unknown field (dry_run, limit)" for name in data if name not in ("dry_run", "limit")}
        dry_run = data.get("dry_run", False)
        if not isinstance(dry_run, bool):
            errors["dry_run"] = "true or false"
        limit = data.get("limit", DEFAULT_ITEM_LIMIT)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit <= MAX_ITEM_LIMIT:
            errors["limit"] = f"a whole number from 0 to {MAX_ITEM_LIMIT}"
        if errors:
            raise exceptions.ValidationError(errors)
        [report] = retention.collect_garbage(
            organization=org, dry_run=dry_run, item_limit=limit, log_summary=True, actor=request.user
        )
        if report.error:
            raise LifecycleFailed(f"the pass stopped: {report.error}; what it deleted before stays deleted")
        return Response(out.LifecycleReportSerializer(report).data)
