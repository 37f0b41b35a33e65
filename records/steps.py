"""Build steps: an organization's cache graph as operators browse it.

A *step* is a record that holds a complete result: a build step an engine cached (`exec
go build ./...`, `pull docker.io/library/golang:1.22`). What a step shows (its sizes,
layers, when and by which engine it was exported) is its *current* result, the newest
complete one; a record can hold more (the same step exported with other layers).

"Used" means an engine was handed a download URL for the step's own layer, the top of its
chain: that is when an engine pulls this step's output rather than only a base it shares
with others. Uploads do not count.

The dashboard pages, the operator API and the eviction service all list steps through
step_listing(), so a search matches the same steps everywhere.
"""

from dataclasses import dataclass, field
from datetime import timedelta

from django.db.models import Count, Exists, F, OuterRef, Q
from django.utils import timezone

from accounts.models import Engine
from blobs.models import Blob
from records.digests import could_start_a_digest, digest_prefix, is_digest
from records.models import LayerContents, PendingExport, Record, RecordInput, Result, ResultLayer

# ?sort= keys and the column each orders by.
STEP_SORTS = {
    "size": "size",
    "total_size": "chain_size",
    "last_used": "last_used_at",
    "created": "exported_at",
}
DEFAULT_STEP_SORT = "-created"
USED_CHOICES = ("yes", "no")
MAX_AGE_DAYS = 36500
MAX_TEXT = 500
DEPENDANTS_SHOWN = 200


class InvalidStepQuery(ValueError):
    """A step search that cannot be run; `errors` maps each bad field to a message."""

    def __init__(self, errors):
        super().__init__("; ".join(f"{name}: {message}" for name, message in errors.items()))
        self.errors = errors


@dataclass(frozen=True)
class StepQuery:
    """A search over an organization's steps: every field empty means all of them."""

    q: str = ""  # substring of the description, any case
    description: str = ""  # the whole description, exactly (steps that share it)
    digest: str = ""  # prefix of the record's digest or identity
    engine: int | None = None  # pk of the engine that exported the current result
    min_age_days: int | None = None  # exported at least this many days ago
    max_age_days: int | None = None  # exported at most this many days ago
    used: str = ""  # "yes": downloaded at least once; "no": never
    layer: str = ""  # digest of a layer in the current result's chain
    sort: str = DEFAULT_STEP_SORT

    FIELDS = ("q", "description", "digest", "engine", "min_age_days", "max_age_days", "used", "layer", "sort")

    @classmethod
    def from_params(cls, params):
        """The query in `params` (a QueryDict or dict of strings). Raises
        InvalidStepQuery naming every field it cannot take."""
        errors = {}
        values = {}
        for name in ("q", "description"):
            text = (params.get(name) or "").strip()
            if "\x00" in text:
                errors[name] = "must not contain a NUL character"
            elif len(text) > MAX_TEXT:
                errors[name] = f"at most {MAX_TEXT} characters"
            else:
                values[name] = text
        digest = digest_prefix(params.get("digest"))
        if digest and not could_start_a_digest(digest):
            errors["digest"] = "not the start of a sha256 digest (hex digits, with or without 'sha256:')"
        else:
            values["digest"] = digest
        layer = (params.get("layer") or "").strip()
        if layer and not is_digest(layer):
            errors["layer"] = "not a digest (sha256: and 64 hex digits)"
        else:
            values["layer"] = layer
        for name, upper in (("engine", None), ("min_age_days", MAX_AGE_DAYS), ("max_age_days", MAX_AGE_DAYS)):
            raw = params.get(name)
            if raw in (None, ""):
                continue
            number = _whole_number(raw)
            if number is None or (upper is not None and number > upper):
                errors[name] = "a whole number" + (f" from 0 to {upper}" if upper else " (an engine's id)")
            else:
                values[name] = number
        used = (params.get("used") or "").strip()
        if used and used not in USED_CHOICES:
            errors["used"] = "'yes', 'no', or empty for both"
        else:
            values["used"] = used
        sort = (params.get("sort") or "").strip() or DEFAULT_STEP_SORT
        if sort.removeprefix("-") not in STEP_SORTS:
            errors["sort"] = "one of " + ", ".join(f"{key}, -{key}" for key in STEP_SORTS)
        else:
            values["sort"] = sort
        if errors:
            raise InvalidStepQuery(errors)
        return cls(**values)

    @property
    def filtered(self):
        """Whether the query narrows the steps at all (the sort does not)."""
        return any(getattr(self, name) not in ("", None) for name in self.FIELDS if name != "sort")

    def params(self, **changes):
        """The query as URL parameters, without empty fields (for links and forms)."""
        merged = {name: getattr(self, name) for name in self.FIELDS} | changes
        return {name: str(value) for name, value in merged.items() if value not in ("", None)}


def _whole_number(raw):
    text = str(raw).strip()
    # isdecimal() also takes other scripts' digits, which int() reads differently.
    if not text or not text.isascii() or not text.isdigit() or len(text) > 18:
        return None
    return int(text)


def current_results(organization):
    """The organization's steps as their current results: for each record with a
    complete result, the newest one (exported last; the higher id on a tie)."""
    newer = Result.objects.filter(record_id=OuterRef("record_id"), complete=True).filter(
        Q(exported_at__gt=OuterRef("exported_at")) | Q(exported_at=OuterRef("exported_at"), pk__gt=OuterRef("pk"))
    )
    return Result.objects.filter(record__organization=organization, complete=True).filter(~Exists(newer))


# What a listed row reads: the sort spills to disk on wide rows, so only these.
LISTED_FIELDS = [
    "record_id", "description", "size", "chain_size", "layer_count", "exported_at", "last_used_at", "engine_id",
    "top_digest", "record__id", "record__description", "record__digest", "record__has_result", "engine__id",
    "engine__engine_id",
]


def step_listing(organization, query=StepQuery(), now=None):
    """The organization's steps matching `query`, in its order: current results with
    their record and engine. Pass the rows shown to describe_steps()."""
    now = now or timezone.now()
    rows = current_results(organization)
    if query.q:
        # The record's description is what the engine called the step (its results' say the same).
        rows = rows.filter(record__description__icontains=query.q)
    if query.description:
        rows = rows.filter(record__description=query.description)
    if query.digest:
        rows = rows.filter(Q(record__digest__startswith=query.digest) | Q(record__identity__startswith=query.digest))
    if query.engine is not None:
        rows = rows.filter(engine_id=query.engine)
    if query.min_age_days is not None:
        rows = rows.filter(exported_at__lte=now - timedelta(days=query.min_age_days))
    if query.max_age_days is not None:
        rows = rows.filter(exported_at__gte=now - timedelta(days=query.max_age_days))
    if query.used == "yes":
        rows = rows.filter(last_used_at__isnull=False)
    elif query.used == "no":
        rows = rows.filter(last_used_at__isnull=True)
    if query.layer:
        layer = ResultLayer.objects.filter(layer__organization=organization, layer__digest=query.layer)
        rows = rows.filter(pk__in=layer.values("result_id"))
    return rows.select_related("record", "engine").only(*LISTED_FIELDS).order_by(*_ordering(query.sort))


def _ordering(sort):
    column = F(STEP_SORTS[sort.removeprefix("-")])
    # Never-used steps (NULL) go last both ways, on SQLite as on PostgreSQL; the id keeps
    # one order among ties, so pages neither repeat nor skip rows.
    if sort.startswith("-"):
        return [column.desc(nulls_last=True), F("pk").desc()]
    return [column.asc(nulls_last=True), F("pk").asc()]


def describe_steps(organization, rows):
    """The steps of `rows` (a page of step_listing) as a list, each given
    dependants: how many other steps take this one as an input;
    same_description: how many steps (this one included) share its description."""
    steps = list(rows)
    record_ids = [step.record_id for step in steps]
    dependants = dict(
        RecordInput.objects.filter(source_id__in=record_ids, record__has_result=True)
        .exclude(record_id=F("source_id"))
        .order_by()
        .values("source_id")
        .annotate(n=Count("record_id", distinct=True))
        .values_list("source_id", "n")
    )
    descriptions = {step.record.description for step in steps} - {""}
    shared = dict(
        current_results(organization)
        .filter(record__description__in=descriptions)
        .order_by()
        .values("record__description")
        .annotate(n=Count("pk"))
        .values_list("record__description", "n")
    )
    for step in steps:
        step.dependants = dependants.get(step.record_id, 0)
        step.same_description = shared.get(step.record.description, 1)
    return steps


def steps_by_layer(organization, digests):
    """{layer digest: number of steps whose current result's chain has it}."""
    return dict(
        current_results(organization)
        .filter(chain_layers__layer__digest__in=list(digests))
        .order_by()
        .values("chain_layers__layer__digest")
        .annotate(n=Count("pk", distinct=True))
        .values_list("chain_layers__layer__digest", "n")
    )


def step_title(record, result=None):
    """What to call a step: the engine's description, else the record's digest."""
    return record.description or (result.description if result else "") or record.digest


@dataclass
class StepDetail:
    record: Record
    result: Result | None  # the current result; None when the record holds none
    results: list  # every result of the record, newest export first, with .engine
    inputs: list  # [(index, [alternative]), ...]; each alternative has .selector, .source, .source_is_step
    dependants: list  # records that take this one as an input (up to DEPENDANTS_SHOWN)
    dependant_count: int
    chain: list  # the current result's ResultLayers, base first, with .layer, .blob, .layer_contents
    pending_export: PendingExport | None
    same_description: int = 1
    exporters: list = field(default_factory=list)  # [(engine or None, first export, last export, results)]


def step_detail(organization, record_id):
    """Everything a step's page shows, or None when the organization has no such record.
    Works for records without a result too, so that inputs can be followed anywhere."""
    record = Record.objects.filter(organization=organization, pk=record_id).first()
    if record is None:
        return None
    results = list(record.results.select_related("engine").order_by("-exported_at", "-pk"))
    current = next((r for r in results if r.complete), None)
    inputs = {}
    for alternative in record.inputs.select_related("source").order_by("index", "selector", "source_id"):
        alternative.source_is_step = alternative.source.has_result
        inputs.setdefault(alternative.index, []).append(alternative)
    dependant_rows = (
        Record.objects.filter(inputs__source=record).exclude(pk=record.pk).distinct().order_by("description", "pk")
    )
    chain = []
    if current is not None:
        chain = list(current.chain_layers.select_related("layer").order_by("position"))
        digests = [link.layer.digest for link in chain]
        blobs = {b.digest: b for b in Blob.objects.filter(organization=organization, digest__in=digests)}
        layer_ids = [link.layer_id for link in chain]
        contents = {c.layer_id: c for c in LayerContents.objects.filter(layer_id__in=layer_ids).defer("listing")}
        for link in chain:
            link.blob = blobs.get(link.layer.digest)
            link.layer_contents = contents.get(link.layer_id)
    same = 1
    if record.description:
        same = current_results(organization).filter(record__description=record.description).count() or 1
    return StepDetail(
        record=record,
        result=current,
        results=results,
        inputs=sorted(inputs.items()),
        dependants=list(dependant_rows[:DEPENDANTS_SHOWN]),
        dependant_count=dependant_rows.count(),
        chain=chain,
        pending_export=PendingExport.objects.filter(record=record).first(),
        same_description=same,
        exporters=_exporters(results),
    )


def _exporters(results):
    """Which engines exported results of the step: [(engine or None, first, last, n)]."""
    found = {}
    for result in results:
        entry = found.setdefault(result.engine_id, [result.engine, result.exported_at, result.exported_at, 0])
        entry[1] = min(entry[1], result.exported_at)
        entry[2] = max(entry[2], result.exported_at)
        entry[3] += 1
    return sorted((tuple(entry) for entry in found.values()), key=lambda e: e[2], reverse=True)


def filter_engines(organization):
    """The engines to filter steps by: the organization's engines, by id."""
    return Engine.objects.filter(organization=organization).only("pk", "engine_id").order_by("engine_id")
