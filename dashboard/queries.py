"""The queries behind the cache pages: one organization's totals and listings.

Every function takes the organization the page was scoped to (accounts.scoping) and reads
only its rows. What a listed row shows is computed in a few queries for the whole page
(annotations, and one query each for the mounts and engines rows point to), never one per
row, so that a page costs the same number of queries however many rows it shows.
"""

from dataclasses import dataclass

from django.db.models import Count, Exists, F, OuterRef, Q, Subquery, Sum
from django.db.models.functions import Coalesce

from accounts.models import Engine
from blobs.models import Blob, BlobState
from blobs.services import InvalidDigest, validate_digest
from mounts.models import CacheMount, MountPolicy, MountSnapshot, SnapshotState
from mounts.services import organization_mount_bytes
from records import steps
from records.digests import could_start_a_digest, digest_prefix
from records.models import Layer, Record, Result, ResultLayer

# ?sort= keys of the blob listing and the column each sorts by.
BLOB_SORTS = {
    "size": "size",
    "last_used": "last_used_at",
    "uses": "use_count",
    "verified": "verified_at",
}
DEFAULT_BLOB_SORT = "-size"


@dataclass(frozen=True)
class Totals:
    verified_blobs: int
    verified_bytes: int
    pending_blobs: int
    records: int
    results: int
    complete_results: int
    layers: int
    mounts: int
    current_snapshot_bytes: int
    live_snapshot_bytes: int


def totals(organization):
    blobs = Blob.objects.filter(organization=organization).aggregate(
        verified=Count("pk", filter=Q(state=BlobState.VERIFIED)),
        verified_bytes=Sum("size", filter=Q(state=BlobState.VERIFIED)),
        pending=Count("pk", filter=Q(state=BlobState.PENDING)),
    )
    results = Result.objects.filter(record__organization=organization).aggregate(
        all=Count("pk"), complete=Count("pk", filter=Q(complete=True))
    )
    current_size = MountSnapshot.objects.current().filter(mount=OuterRef("pk")).values("size")[:1]
    mounts = (
        CacheMount.objects.filter(organization=organization)
        .annotate(current_size=Subquery(current_size))
        .aggregate(count=Count("pk"), current_bytes=Sum("current_size"))
    )
    return Totals(
        verified_blobs=blobs["verified"],
        verified_bytes=blobs["verified_bytes"] or 0,
        pending_blobs=blobs["pending"],
        records=Record.objects.filter(organization=organization).count(),
        results=results["all"],
        complete_results=results["complete"],
        layers=Layer.objects.filter(organization=organization).count(),
        mounts=mounts["count"],
        current_snapshot_bytes=mounts["current_bytes"] or 0,
        live_snapshot_bytes=organization_mount_bytes(organization),
    )


@dataclass(frozen=True)
class StoredBytes:
    layer: int
    mount: int
    unreferenced: int


def stored_bytes(organization, totals_row=None):
    """What the organization stores, by kind: verified blobs that are layers of the cache
    graph; live mount snapshots (totals' live_snapshot_bytes); and verified blobs neither
    names (nor an unreleased snapshot still waiting for them), which the storage
    lifecycle deletes once their grace period is over. A blob that is both a layer and a
    snapshot counts in both."""
    totals_row = totals_row or totals(organization)
    in_layer = Exists(Layer.objects.filter(organization=organization, digest=OuterRef("digest")))
    in_mount = Exists(
        MountSnapshot.objects.filter(
            mount__organization=organization, digest=OuterRef("digest"), released_at__isnull=True
        ).exclude(state=SnapshotState.FAILED)
    )
    sums = (
        Blob.objects.filter(organization=organization, state=BlobState.VERIFIED)
        .annotate(in_layer=in_layer, in_mount=in_mount)
        .aggregate(
            layer=Sum("size", filter=Q(in_layer=True)),
            unreferenced=Sum("size", filter=Q(in_layer=False, in_mount=False)),
        )
    )
    return StoredBytes(
        layer=sums["layer"] or 0, mount=totals_row.live_snapshot_bytes, unreferenced=sums["unreferenced"] or 0
    )


def blob_ordering(sort):
    """(the sort in effect, ORDER BY terms) for a ?sort= value such as 'size' or
    '-last_used'; anything else means the default."""
    key = (sort or "").removeprefix("-")
    if key not in BLOB_SORTS:
        sort, key = DEFAULT_BLOB_SORT, DEFAULT_BLOB_SORT.removeprefix("-")
    column = F(BLOB_SORTS[key])
    # Pending and never-used blobs (NULL) go last both ways, on SQLite as on PostgreSQL.
    first = column.desc(nulls_last=True) if sort.startswith("-") else column.asc(nulls_last=True)
    # Digests are unique per organization: ties keep one order, so pages neither repeat
    # nor skip rows.
    return sort, [first, "digest"]


def blob_listing(organization, sort=DEFAULT_BLOB_SORT, prefix=""):
    """(the organization's blobs in the order asked for, the sort in effect). Plain rows:
    pass those shown to describe_blobs()."""
    sort, ordering = blob_ordering(sort)
    rows = Blob.objects.filter(organization=organization)
    prefix = digest_prefix(prefix)
    if prefix and not could_start_a_digest(prefix):
        # Text no digest starts with matches nothing, and is never sent to the database:
        # PostgreSQL refuses a NUL character in a query outright.
        rows = rows.none()
    elif prefix:
        rows = rows.filter(digest__startswith=prefix)
    return rows.order_by(*ordering), sort


def describe_blobs(organization, rows):
    """The blobs of `rows` (a page of blob_listing), in the same order, each with
    in_layer: a layer of the cache graph is this blob;
    result_count: results whose layer chain includes it;
    step_count: steps whose current result's chain includes it (records.steps);
    snapshot_mount: a mount whose unreleased snapshot is this blob, or None;
    released_mount: a mount whose released snapshot is this blob, or None;
    exporter: the engine that exported the first result using it, else the one that
    uploaded the first snapshot of it, or None.
    The usage is worked out for the page's rows only, in a query of its own: ordering by
    a column and cutting a page comes first, so the correlated subqueries never run for
    the rows of other pages (SQLite would run them for every row before sorting)."""
    ids = list(rows.values_list("pk", flat=True))
    links = ResultLayer.objects.filter(layer__organization=organization, layer__digest=OuterRef("digest"))
    result_count = links.order_by().values("layer_id").annotate(n=Count("result_id", distinct=True)).values("n")
    first_export = links.filter(result__engine__isnull=False).order_by("result__exported_at", "result_id")
    snapshots = MountSnapshot.objects.filter(mount__organization=organization, digest=OuterRef("digest")).exclude(
        state=SnapshotState.FAILED
    )
    live_mount = snapshots.filter(released_at__isnull=True).order_by("mount__name").values("mount_id")[:1]
    released_mount = snapshots.filter(released_at__isnull=False).order_by("mount__name").values("mount_id")[:1]
    first_upload = snapshots.filter(engine__isnull=False).order_by("created_at", "pk").values("engine_id")[:1]
    found = (
        Blob.objects.filter(pk__in=ids)
        .annotate(
            in_layer=Exists(Layer.objects.filter(organization=organization, digest=OuterRef("digest"))),
            result_count=Coalesce(Subquery(result_count), 0),
            snapshot_mount_id=Subquery(live_mount),
            released_mount_id=Subquery(released_mount),
            exporter_id=Coalesce(Subquery(first_export.values("result__engine_id")[:1]), Subquery(first_upload)),
        )
        .in_bulk()
    )
    # A blob evicted between the two queries is simply not shown.
    blobs = [found[pk] for pk in ids if pk in found]
    mount_ids = {b.snapshot_mount_id for b in blobs} | {b.released_mount_id for b in blobs}
    mounts = CacheMount.objects.order_by().only("pk", "name").in_bulk(mount_ids - {None})
    engines = Engine.objects.order_by().only("pk", "engine_id").in_bulk({b.exporter_id for b in blobs} - {None})
    step_counts = steps.steps_by_layer(organization, [b.digest for b in blobs if b.in_layer])
    for blob in blobs:
        blob.step_count = step_counts.get(blob.digest, 0)
        blob.snapshot_mount = mounts.get(blob.snapshot_mount_id)
        blob.released_mount = mounts.get(blob.released_mount_id)
        blob.exporter = engines.get(blob.exporter_id)
    return blobs


def blob_usage(organization, digest):
    """One blob as the listing describes it, or None when the organization has no blob
    with that digest."""
    try:
        validate_digest(digest)
    except InvalidDigest:
        # From a URL: anything else names no blob, and must not reach the database (NUL).
        return None
    return next(iter(describe_blobs(organization, Blob.objects.filter(organization=organization, digest=digest))), None)


def mount_listing(organization):
    """The organization's cache mounts by name, annotated with current_snapshot_id and
    live_snapshots (the current one and those kept besides it). Pass the rows shown to
    with_current_snapshots()."""
    current = MountSnapshot.objects.current().filter(mount=OuterRef("pk")).values("pk")[:1]
    live = (
        MountSnapshot.objects.live()
        .filter(mount=OuterRef("pk"))
        .order_by()
        .values("mount_id")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return (
        CacheMount.objects.filter(organization=organization)
        .annotate(current_snapshot_id=Subquery(current), live_snapshots=Coalesce(Subquery(live), 0))
        .order_by("name")
    )


def with_current_snapshots(organization, mounts, policy=None):
    """The listed mounts as a list, each given .current (its current snapshot with its
    engine, contents left unread, or None) and .synced (whether engines sync it now, under
    `policy`, the organization's MountPolicy, read when not given)."""
    mounts = list(mounts)
    ids = {m.current_snapshot_id for m in mounts} - {None}
    snapshots = MountSnapshot.objects.order_by().select_related("engine").defer("contents").in_bulk(ids)
    policy = policy or MountPolicy.for_organization(organization)
    for mount in mounts:
        mount.current = snapshots.get(mount.current_snapshot_id)
        mount.synced = mount.is_synced(policy)
    return mounts


CURRENT, KEPT = "current", "kept"


def mount_snapshots(mount):
    """(the current snapshot with its contents summary or None, every snapshot newest
    first). Each snapshot is given .role (current, kept, released, pending or failed)
    and annotated with blob_stored (the organization still holds its blob, verified)."""
    stored = Blob.objects.filter(
        organization_id=mount.organization_id, digest=OuterRef("digest"), state=BlobState.VERIFIED
    )
    current = MountSnapshot.objects.current().filter(mount=mount).select_related("engine").first()
    snapshots = list(
        mount.snapshots.select_related("engine")
        .defer("contents")
        .annotate(blob_stored=Exists(stored))
        .order_by("-created_at", "-pk")
    )
    for snapshot in snapshots:
        snapshot.role = _role(snapshot, current)
    return current, snapshots


def _role(snapshot, current):
    if current is not None and snapshot.pk == current.pk:
        return CURRENT
    if snapshot.released_at is not None:
        return "released"
    if snapshot.state == SnapshotState.VERIFIED:
        return KEPT
    return snapshot.state


def mount_weight(mount):
    """What evicting `mount` deletes: {"snapshots": all its snapshots, "live": those
    engines could restore from, "live_bytes": their size}."""
    live = Q(state=SnapshotState.VERIFIED, released_at__isnull=True)
    found = MountSnapshot.objects.filter(mount=mount).aggregate(
        snapshots=Count("pk"), live=Count("pk", filter=live), live_bytes=Sum("size", filter=live)
    )
    found["live_bytes"] = found["live_bytes"] or 0
    return found
