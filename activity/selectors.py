"""Reading activity: the one place the pages, the charts and the operator API get it from.

A window is a range (24h, 7d, 30d, 90d) cut into buckets (hour or day). Day buckets read
day rows and hourly rows together, the hours summed per UTC day, so a range reaching
past the hourly window (rolled up into days) and one within it read the same way, in one
query. Counters are grouped into named series (SERIES): a series sums one or more
signals, and the charts, the API and the engines list all use these names.
"""

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone as dt_timezone

from django.conf import settings
from django.db.models import Case, IntegerField, Max, Q, Sum, When
from django.db.models.functions import TruncDay
from django.utils import timezone

from activity.models import Activity, Period, Signal, StorageSample

HOUR = "hour"
DAY = "day"
BUCKETS = (HOUR, DAY)
# range -> (its length in buckets of a day, the bucket it is drawn in by default).
RANGES = {"24h": (1, HOUR), "7d": (7, DAY), "30d": (30, DAY), "90d": (90, DAY)}
DEFAULT_RANGE = "7d"
# More hourly buckets than this make a chart of hairlines and a page of rows.
MAX_HOURLY_DAYS = 7


@dataclass(frozen=True)
class Series:
    key: str
    label: str
    signals: tuple
    unit: str = "count"  # "count" or "bytes"


SERIES = {
    s.key: s
    for s in [
        Series("bytes_up", "bytes uploaded (layers and mounts)", (Signal.LAYER_UPLOAD_BYTES, Signal.MOUNT_UPLOAD_BYTES), "bytes"),
        Series("bytes_down", "bytes served by the built-in store", (Signal.SERVED_BYTES,), "bytes"),
        Series("skipped_bytes", "bytes not uploaded (Skip)", (Signal.UPLOAD_SKIPPED_BYTES,), "bytes"),
        Series("upload_skips", "uploads skipped", (Signal.UPLOAD_SKIPS,)),
        Series("download_urls", "download URLs issued", (Signal.DOWNLOAD_URLS,)),
        Series("shared_steps", "shared steps", (Signal.SHARED_STEPS,)),
        Series("imports", "imports served", (Signal.IMPORTS,)),
        Series("exports_asked", "records asked to export", (Signal.EXPORTS_ASKED,)),
        Series("exports_delivered", "records delivered", (Signal.EXPORTS_DELIVERED,)),
        Series("exports_refused", "records refused", (Signal.EXPORTS_REFUSED,)),
        Series("mount_downloads", "mount downloads", (Signal.MOUNT_DOWNLOADS,)),
        Series("mount_uploads", "mount uploads", (Signal.MOUNT_UPLOADS,)),
    ]
}
STORAGE_FIELDS = ("layer_bytes", "mount_bytes", "unreferenced_bytes")


class BadWindow(ValueError):
    """A range or bucket the activity cannot be read in; the message says what is accepted."""

    def __init__(self, field, message):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Window:
    range: str
    bucket: str
    starts: tuple  # every bucket's start, oldest first

    @property
    def since(self):
        return self.starts[0]

    @property
    def description(self):
        """What the buckets cover, in words: a day bucket is a UTC calendar day, so "7d"
        per day is six whole days and today so far, not the last 168 hours."""
        if self.bucket == HOUR:
            return f"the last {len(self.starts)} hours, by the hour (UTC), this hour so far included"
        return f"the last {len(self.starts)} calendar days (UTC), today so far included"

    @property
    def step(self):
        return timedelta(hours=1) if self.bucket == HOUR else timedelta(days=1)


def window(range_key=None, bucket=None, now=None):
    """The Window for a range and bucket as typed by a person (None or "" for the
    defaults); BadWindow naming the field otherwise."""
    range_key = (range_key or "").strip() or DEFAULT_RANGE
    if range_key not in RANGES:
        raise BadWindow("range", "range must be one of " + ", ".join(RANGES))
    days, default_bucket = RANGES[range_key]
    bucket = (bucket or "").strip() or default_bucket
    if bucket not in BUCKETS:
        raise BadWindow("bucket", "bucket must be hour or day")
    # Hourly rows are kept CACHEWEB_ACTIVITY_DAYS, then rolled up into days: an hourly
    # chart reaching past that would show zeros where the day chart has counts.
    hourly_days = min(MAX_HOURLY_DAYS, getattr(settings, "ACTIVITY_DAYS", MAX_HOURLY_DAYS))
    if bucket == HOUR and days > hourly_days:
        raise BadWindow("bucket", f"hourly buckets are drawn for ranges up to {hourly_days} days; use day")
    if bucket == DAY and days == 1:
        raise BadWindow("bucket", "24h is drawn per hour; a day bucket is a calendar day (use 7d or longer)")
    now = (now or timezone.now()).astimezone(dt_timezone.utc)
    if bucket == HOUR:
        last = now.replace(minute=0, second=0, microsecond=0)
        count, step = days * 24, timedelta(hours=1)
    else:
        last = now.replace(hour=0, minute=0, second=0, microsecond=0)
        count, step = days, timedelta(days=1)
    return Window(range_key, bucket, tuple(last - step * i for i in range(count - 1, -1, -1)))


def _rows(organization, engine_ref):
    rows = Activity.objects.filter(organization=organization)
    return rows if engine_ref is None else rows.filter(engine_ref=engine_ref)


def _signal_names(keys):
    return sorted({str(signal) for key in keys for signal in SERIES[key].signals})


@dataclass
class ActivitySeries:
    window: Window
    values: dict = field(default_factory=dict)  # series key -> [value per bucket]

    def total(self, key):
        return sum(self.values[key])

    def points(self, key):
        return list(zip(self.window.starts, self.values[key]))


def series(organization, win, keys=None, engine_ref=None):
    """The series `keys` (all of SERIES by default) of the organization, or of one engine
    (its accounts.Engine pk; 0: calls matched to no engine), one value per bucket of
    `win`, zeros where nothing was counted. One query."""
    keys = list(keys or SERIES)
    names = _signal_names(keys)
    rows = _rows(organization, engine_ref).filter(name__in=names, start__gte=win.since)
    if win.bucket == HOUR:
        grouped = rows.filter(period=Period.HOUR).values("start", "name").annotate(total=Sum("value"))
        bucket_of = "start"
    else:
        grouped = (
            rows.filter(period__in=[Period.HOUR, Period.DAY])
            .annotate(day=TruncDay("start", tzinfo=dt_timezone.utc))
            .values("day", "name")
            .annotate(total=Sum("value"))
        )
        bucket_of = "day"
    index = {start: i for i, start in enumerate(win.starts)}
    by_signal = {name: [0] * len(win.starts) for name in names}
    for row in grouped:
        at = _aware(row[bucket_of])
        if at in index:
            by_signal[row["name"]][index[at]] += row["total"]
    values = {}
    for key in keys:
        signals = [str(s) for s in SERIES[key].signals]
        values[key] = [sum(by_signal[name][i] for name in signals) for i in range(len(win.starts))]
    return ActivitySeries(win, values)


def totals(organization, since=None, until=None, engine_ref=None):
    """{series key: total} over [since, until) (all kept history by default). One query."""
    rows = _rows(organization, engine_ref).filter(name__in=_signal_names(SERIES))
    if since is not None:
        rows = rows.filter(start__gte=since)
    if until is not None:
        rows = rows.filter(start__lt=until)
    by_signal = dict(rows.values_list("name").annotate(total=Sum("value")))
    return {key: sum(by_signal.get(str(s), 0) for s in s_.signals) for key, s_ in SERIES.items()}


def storage_series(organization, win):
    """{field: [bytes per bucket or None]} from the organization's StorageSample rows:
    each bucket shows the last sample taken in it (None where none was taken), the
    samples being hourly snapshots, not amounts to add."""
    last = {}
    samples = StorageSample.objects.filter(organization=organization, at__gte=win.since).order_by("at")
    for sample in samples.only("at", *STORAGE_FIELDS):
        at = sample.at.astimezone(dt_timezone.utc)
        start = at.replace(minute=0, second=0, microsecond=0)
        if win.bucket == DAY:
            start = start.replace(hour=0)
        last[start] = sample
    values = {name: [] for name in STORAGE_FIELDS}
    for start in win.starts:
        sample = last.get(start)
        for name in STORAGE_FIELDS:
            values[name].append(getattr(sample, name) if sample else None)
    return values


@dataclass(frozen=True)
class EngineActivity:
    last_import: datetime | None = None  # the start of the last hour (or day) with an import
    last_export: datetime | None = None
    bytes_up: int = 0
    bytes_down: int = 0
    shared_steps: int = 0
    # "hour", or "day" once the hours it happened in were rolled up into days.
    last_import_period: str = HOUR
    last_export_period: str = HOUR


ENGINE_ACTIVITY_FIELDS = ("last_import", "last_export", "bytes_up", "bytes_down", "shared_steps")
NO_ACTIVITY = EngineActivity()


def _sum_of(key):
    names = _signal_names([key])
    return Sum(Case(When(name__in=names, then="value"), default=0, output_field=IntegerField()))


def engine_activity(organization, engine_refs=None):
    """{engine pk: EngineActivity} over all kept history, for every engine of the
    organization that has activity (or only `engine_refs`). One grouped query."""
    rows = _rows(organization, None).filter(
        name__in=_signal_names(["imports", "exports_delivered", "bytes_up", "bytes_down", "shared_steps"])
    )
    if engine_refs is not None:
        rows = rows.filter(engine_ref__in=list(engine_refs))
    grouped = (
        rows.exclude(engine_ref=0)
        .values("engine_ref")
        .annotate(
            last_import_hour=Max("start", filter=Q(name=Signal.IMPORTS, value__gt=0, period=Period.HOUR)),
            last_import_day=Max("start", filter=Q(name=Signal.IMPORTS, value__gt=0, period=Period.DAY)),
            last_export_hour=Max("start", filter=Q(name=Signal.EXPORTS_DELIVERED, value__gt=0, period=Period.HOUR)),
            last_export_day=Max("start", filter=Q(name=Signal.EXPORTS_DELIVERED, value__gt=0, period=Period.DAY)),
            bytes_up=_sum_of("bytes_up"),
            bytes_down=_sum_of("bytes_down"),
            shared_steps=_sum_of("shared_steps"),
        )
    )
    found = {}
    for row in grouped:
        last_import, import_period = _latest(row, "last_import")
        last_export, export_period = _latest(row, "last_export")
        found[row["engine_ref"]] = EngineActivity(
            last_import=last_import,
            last_export=last_export,
            bytes_up=row["bytes_up"] or 0,
            bytes_down=row["bytes_down"] or 0,
            shared_steps=row["shared_steps"] or 0,
            last_import_period=import_period,
            last_export_period=export_period,
        )
    return found


def _latest(row, name):
    """(start, period) of the latest hour, or of the latest day when every hour it
    happened in has been rolled up (hours are always newer than the days they became)."""
    hour, day = _aware(row[name + "_hour"]), _aware(row[name + "_day"])
    if hour is not None or day is None:
        return hour, HOUR
    return day, DAY


def _aware(value):
    if value is None:
        return None
    if timezone.is_naive(value):
        return value.replace(tzinfo=dt_timezone.utc)
    return value.astimezone(dt_timezone.utc)
