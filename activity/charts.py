"""Charts of activity, drawn on the server as SVG (no script, nothing loaded from elsewhere).

A chart is bars in a viewBox the browser stretches to the page's width
(preserveAspectRatio="none"), so it fits a phone as well as a desktop; every word on it
(legend, scale, dates) is HTML around the SVG, readable at any width. Each bar carries
its numbers (data-series, data-bucket, data-value) and a <title>, and each chart has a
table of the same numbers behind a <details>.
"""

from dataclasses import dataclass, field

from django.contrib.humanize.templatetags.humanize import intcomma
from django.template.defaultfilters import filesizeformat

from activity import selectors
from activity.selectors import HOUR, SERIES

# One unit of the viewBox's width per bucket is split among the series' bars.
BUCKET_WIDTH = 12
BUCKET_GAP = 2
HEIGHT = 100


@dataclass(frozen=True)
class ChartSpec:
    key: str
    title: str
    series: tuple
    unit: str = "count"
    stacked: bool = False
    about: str = ""


ACTIVITY_CHARTS = (
    ChartSpec(
        "bytes", "Bytes up and down", ("bytes_up", "bytes_down"), "bytes",
        about="Uploaded: bytes engines sent for layers and mount snapshots. Served: bytes the built-in "
        "store sent; with S3 the engines download from S3 directly and only the download URLs are counted.",
    ),
    ChartSpec(
        "skips", "Skip savings", ("skipped_bytes",), "bytes",
        about="Bytes an engine did not upload because the service already had the blob and answered Skip.",
    ),
    ChartSpec(
        "reuse", "Downloads and shared steps", ("download_urls", "shared_steps"),
        about="Shared steps: steps an engine reported that another engine had already exported, so it "
        "was not asked to export them. Download URLs: addresses given out; whether the bytes were used, "
        "the service cannot see.",
    ),
    ChartSpec(
        "transfers", "Imports and exports", ("imports", "exports_delivered", "exports_refused"),
        about="Imports: records served to engines. Exports: records engines delivered, and those refused.",
    ),
)
STORAGE_CHART = ChartSpec(
    "storage", "Stored bytes", selectors.STORAGE_FIELDS, "bytes", stacked=True,
    about="What was stored at the last hourly sample of each bucket: layer blobs, mount snapshot blobs, "
    "and blobs neither uses (unreferenced, waiting for the storage lifecycle).",
)
STORAGE_LABELS = {
    "layer_bytes": "layers",
    "mount_bytes": "mounts",
    "unreferenced_bytes": "unreferenced",
}


def _format(value, unit):
    if value is None:
        return "no sample"
    return filesizeformat(value) if unit == "bytes" else intcomma(value)


def _bucket_label(start, bucket):
    return start.strftime("%b %d %H:00") if bucket == HOUR else start.strftime("%b %d")


@dataclass
class Bar:
    series: str
    css: str
    bucket: str
    value: int
    x: float
    y: float
    width: float
    height: float
    text: str


@dataclass
class Chart:
    spec: ChartSpec
    window: selectors.Window
    series: list  # [{"key", "label", "css", "values", "shown", "total"}]
    bars: list = field(default_factory=list)
    rows: list = field(default_factory=list)  # [(bucket label, iso, [shown value per series])]
    top: int = 0

    @property
    def key(self):
        return self.spec.key

    @property
    def width(self):
        return len(self.window.starts) * BUCKET_WIDTH

    @property
    def height(self):
        return HEIGHT

    @property
    def top_label(self):
        return _format(self.top, self.spec.unit) if self.top else ""

    @property
    def middle_label(self):
        if not self.top:
            return ""
        # 5 halves to 2.5: a count's scale says so rather than round down.
        return _format(self.top // 2, "bytes") if self.spec.unit == "bytes" else f"{self.top / 2:g}"

    @property
    def first_label(self):
        return _bucket_label(self.window.starts[0], self.window.bucket)

    @property
    def last_label(self):
        return _bucket_label(self.window.starts[-1], self.window.bucket)

    @property
    def empty(self):
        return not any(value for s in self.series for value in s["values"] if value)

    @property
    def summary(self):
        """The chart in a sentence, for screen readers."""
        parts = [f"{s['label']}: {s['total']}" for s in self.series]
        span = f"{self.first_label} to {self.last_label}, per {self.window.bucket}"
        return f"{self.spec.title}, {span}. " + ("; ".join(parts) if not self.spec.stacked else self.spec.about)


def _nice_top(value, unit="count"):
    """A round number at or above `value`, so the scale reads 0, half and top: 1, 2 or 5
    times a power of ten (of ten times a power of 1024, for bytes: "10.0 MB")."""
    if value <= 0:
        return 0
    base = 1
    if unit == "bytes":
        while base * 1024 <= value:
            base *= 1024
    magnitude = base
    while magnitude * 10 <= value:
        magnitude *= 10
    for step in (1, 2, 5, 10):
        if step * magnitude >= value:
            return step * magnitude
    return 10 * magnitude


def build(spec, window, values, labels=None):
    """A Chart of `values` ({series key: [value or None per bucket]})."""
    labels = labels or {}
    series = []
    for index, key in enumerate(spec.series):
        raw = values[key]
        total = sum(v for v in raw if v is not None)
        series.append(
            {
                "key": key,
                "label": labels.get(key) or SERIES[key].label,
                "css": f"s{index}",
                "values": raw,
                "shown": [_format(v, spec.unit) for v in raw],
                # Stored bytes are a level, not an amount: their "total" is the latest sample.
                "total": _format(_latest(raw), spec.unit) if spec.stacked else _format(total, spec.unit),
            }
        )
    chart = Chart(spec, window, series)
    if spec.stacked:
        peak = max((sum(s["values"][i] or 0 for s in series) for i in range(len(window.starts))), default=0)
    else:
        peak = max((v or 0 for s in series for v in s["values"]), default=0)
    chart.top = _nice_top(peak, spec.unit)
    scale = HEIGHT / chart.top if chart.top else 0
    inner = BUCKET_WIDTH - BUCKET_GAP
    bar_width = inner if spec.stacked else inner / len(series)
    for i, start in enumerate(window.starts):
        iso = start.isoformat()
        label = _bucket_label(start, window.bucket)
        base = HEIGHT
        for j, s in enumerate(series):
            value = s["values"][i]
            if spec.stacked and value is None:
                continue
            height = (value or 0) * scale
            x = i * BUCKET_WIDTH + BUCKET_GAP / 2 + (0 if spec.stacked else j * bar_width)
            y = (base - height) if spec.stacked else HEIGHT - height
            if spec.stacked:
                base -= height
            chart.bars.append(
                Bar(s["key"], s["css"], iso, value or 0, round(x, 3), round(y, 3), round(bar_width, 3),
                    round(height, 3), f"{label}: {s['label']} {s['shown'][i]}")
            )
        chart.rows.append((label, iso, [s["shown"][i] for s in series]))
    return chart


def _latest(values):
    present = [v for v in values if v is not None]
    return present[-1] if present else None


def activity_charts(organization, window, engine_ref=None):
    """The activity charts of the organization, or of one engine: one query for all."""
    keys = [key for spec in ACTIVITY_CHARTS for key in spec.series]
    found = selectors.series(organization, window, keys, engine_ref=engine_ref)
    return [build(spec, window, found.values) for spec in ACTIVITY_CHARTS]


def storage_chart(organization, window):
    return build(STORAGE_CHART, window, selectors.storage_series(organization, window), STORAGE_LABELS)


def page_window(params):
    """(Window, error message or "", the bucket asked) from a page's query string: a bad
    range or bucket shows the default window with the message, never an error page."""
    asked = params.get("bucket", "")
    try:
        return selectors.window(params.get("range"), asked), "", asked
    except selectors.BadWindow as exc:
        return selectors.window(), f"{exc}.", ""
