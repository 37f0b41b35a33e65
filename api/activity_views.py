"""GET /api/v1/orgs/{slug}/activity/: the series the dashboard's charts draw, as JSON.

Read through activity.selectors and activity.charts (the same windows, series and chart
groups as the pages); the organization through OperatorView.organization (outsiders 404).
"""

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, serializers
from rest_framework.response import Response

from accounts.models import Engine
from activity import charts, selectors
from api.views import ERRORS, OperatorView


class SeriesSerializer(serializers.Serializer):
    label = serializers.CharField()
    unit = serializers.ChoiceField(choices=["count", "bytes"])
    signals = serializers.ListField(child=serializers.CharField(), help_text="the counters it adds up")
    values = serializers.ListField(child=serializers.IntegerField(), help_text="one per bucket, oldest first")
    total = serializers.IntegerField()


class ChartSerializer(serializers.Serializer):
    key = serializers.CharField()
    title = serializers.CharField()
    unit = serializers.ChoiceField(choices=["count", "bytes"])
    series = serializers.ListField(child=serializers.CharField(), help_text="keys of `series` (or `storage`)")


class StorageSerializer(serializers.Serializer):
    layer_bytes = serializers.ListField(child=serializers.IntegerField(allow_null=True))
    mount_bytes = serializers.ListField(child=serializers.IntegerField(allow_null=True))
    unreferenced_bytes = serializers.ListField(child=serializers.IntegerField(allow_null=True))


class ActivitySerializer(serializers.Serializer):
    range = serializers.ChoiceField(choices=list(selectors.RANGES))
    bucket = serializers.ChoiceField(choices=list(selectors.BUCKETS))
    engine = serializers.IntegerField(allow_null=True, help_text="the engine asked for (0: calls matched to none)")
    buckets = serializers.ListField(child=serializers.DateTimeField(), help_text="each bucket's start (UTC)")
    series = serializers.DictField(child=SeriesSerializer())
    storage = StorageSerializer(
        allow_null=True,
        help_text="stored bytes at the last hourly sample of each bucket (null: no sample); "
        "for the whole organization only",
    )
    charts = ChartSerializer(many=True, help_text="how the dashboard groups the series into charts")


class ActivityView(OperatorView):
    @extend_schema(
        operation_id="activity",
        parameters=[
            OpenApiParameter("range", str, enum=list(selectors.RANGES), description=f"default {selectors.DEFAULT_RANGE}"),
            OpenApiParameter(
                "bucket", str, enum=list(selectors.BUCKETS),
                description=f"default: hour for 24h, day otherwise; hour for ranges up to {selectors.MAX_HOURLY_DAYS} days",
            ),
            OpenApiParameter(
                "engine", {"type": "integer", "minimum": 0},
                description="an engine's id (from engines/): its activity only; 0: calls matched to no engine",
            ),
        ],
        responses={200: ActivitySerializer, **ERRORS},
        description="The activity counters per hour or day, as the Cache overview and engine pages chart them.",
    )
    def get(self, request, slug):
        org = self.organization(slug)
        params = request.query_params
        try:
            win = selectors.window(params.get("range"), params.get("bucket"))
        except selectors.BadWindow as exc:
            raise exceptions.ValidationError({exc.field: str(exc)}) from None
        engine_ref = _engine_ref(org, params.get("engine"))
        found = selectors.series(org, win, engine_ref=engine_ref)
        moment = serializers.DateTimeField()
        specs = list(charts.ACTIVITY_CHARTS) if engine_ref is not None else [charts.STORAGE_CHART, *charts.ACTIVITY_CHARTS]
        return Response(
            {
                "range": win.range,
                "bucket": win.bucket,
                "engine": engine_ref,
                "buckets": [moment.to_representation(start) for start in win.starts],
                "series": {
                    key: {
                        "label": spec.label,
                        "unit": spec.unit,
                        "signals": [str(s) for s in spec.signals],
                        "values": values,
                        "total": sum(values),
                    }
                    for key, spec in selectors.SERIES.items()
                    for values in [found.values[key]]
                },
                "storage": selectors.storage_series(org, win) if engine_ref is None else None,
                "charts": [
                    {"key": spec.key, "title": spec.title, "unit": spec.unit, "series": list(spec.series)}
                    for spec in specs
                ],
            }
        )


def _engine_ref(org, raw):
    text = (raw or "").strip()
    if not text:
        return None
    if not (text.isascii() and text.isdigit() and len(text) < 19):
        raise exceptions.ValidationError({"engine": "an engine's id (a whole number), or 0"})
    pk = int(text)
    if pk and not Engine.objects.filter(organization=org, pk=pk).exists():
        raise exceptions.ValidationError({"engine": f"no engine {pk} in this organization"})
    return pk
