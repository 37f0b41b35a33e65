"""Storage lifecycle: garbage collection (always on) and eviction (off unless configured).

    collect_garbage(organization=None, dry_run=False) -> [Report]   every organization, or one
    collect_organization(organization, dry_run=False, item_limit=0) -> Report
    preview(organization, limit=50) -> Report   what the next pass would delete, as objects
    eviction_policy(organization=None) -> EvictionPolicy   the defaults, or an organization's
    grace(organization) -> timedelta
    set_storage_policy(organization, actor, storage_limit=KEEP, unused_after_days=KEEP)
    passes(organization) -> the pass records, newest first / next_pass_at(organization)
    steps_of_blobs(organization, digests) -> the steps whose current result uses them

collect_garbage records every pass (retention.models.LifecyclePass) and writes an audit
entry for each one that deleted something: actor "policy" for the scheduled pass, the user
or command that started any other.

One pass over an organization, in this order:

1. mount snapshots released, or failed, longer than the grace ago: their rows go;
2. pending exports asked for long ago: their rows go;
3. blobs nothing references any more (no layer of the organization, no snapshot that is
   neither released nor failed) and that were not created, verified or used within the
   grace: bytes first, then the row (blobs.services.delete_blob);
4. eviction, when configured: verified blobs unused for CACHEWEB_EVICT_UNUSED_AFTER days,
   then the least recently used ones while the organization holds more than
   CACHEWEB_ORG_STORAGE_LIMIT bytes (or the organization's own StoragePolicy).

The grace protects work in flight: an engine uploads a layer's blob first and posts the
/layers that references it afterwards, within its export timeout, on a URL valid for
CACHEWEB_BLOB_URL_LIFETIME; a mount snapshot's blob is pending until it is confirmed.

Rows are read in batches and every deletion commits on its own, so an organization with
tens of thousands of blobs neither sits in memory nor holds one long transaction.
"""

import logging
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import BooleanField, Exists, ExpressionWrapper, OuterRef, Q, Sum
from django.db.models.functions import Coalesce, Greatest
from django.template.defaultfilters import filesizeformat
from django.utils import timezone

from accounts.models import Organization
from audit import services as audit
from audit.models import Action, ActorKind
from blobs.models import Blob, BlobState
from blobs.services import delete_blob, flush_uses
from blobs.storage import StoreUnavailable
from mounts.models import MountSnapshot, SnapshotState
from mounts.services import referenced_digests
from records.models import Layer, PendingExport
from records.services import export_retry_after
from records.services import blobs_lost
from records.steps import current_results
from retention.models import LifecyclePass, StoragePolicy

log = logging.getLogger("cacheweb.retention")

# Rows per query. Small enough for SQLite's limit on query parameters (digest IN (...)).
BATCH = 500
# An object store that failed this many deletions in a row is taken to be down: the rest
# of the organization's blobs wait for the next pass instead of each waiting for a timeout.
STORE_FAILURES_TO_GIVE_UP = 10

RELEASED_SNAPSHOTS = "released_snapshots"
FAILED_SNAPSHOTS = "failed_snapshots"
PENDING_EXPORTS = "pending_exports"
UNREFERENCED_BLOBS = "unreferenced_blobs"
UNUSED_BLOBS = "unused_blobs"
OVER_LIMIT_BLOBS = "over_limit_blobs"
KINDS = {
    RELEASED_SNAPSHOTS: "released snapshots",
    FAILED_SNAPSHOTS: "failed snapshots",
    PENDING_EXPORTS: "pending exports",
    UNREFERENCED_BLOBS: "unreferenced blobs",
    UNUSED_BLOBS: "unused blobs (evicted)",
    OVER_LIMIT_BLOBS: "blobs over the storage limit (evicted)",
}
BLOB_KINDS = (UNREFERENCED_BLOBS, UNUSED_BLOBS, OVER_LIMIT_BLOBS)
BLOB_FIELDS = ("pk", "organization", "digest", "size", "state", "created_at", "verified_at", "last_used_at")


def _size(size):
    return filesizeformat(size).replace("\xa0", " ")


@dataclass(frozen=True)
class EvictionPolicy:
    """The eviction settings in force: CACHEWEB_EVICT_UNUSED_AFTER and
    CACHEWEB_ORG_STORAGE_LIMIT, or an organization's StoragePolicy where it sets them
    (`overridden` names those fields)."""

    unused_after_days: int = 0
    storage_limit: int = 0
    overridden: frozenset = frozenset()

    @property
    def enabled(self):
        return bool(self.unused_after_days or self.storage_limit)

    def describe(self):
        if not self.enabled:
            return "eviction off (neither CACHEWEB_EVICT_UNUSED_AFTER nor CACHEWEB_ORG_STORAGE_LIMIT is set)"
        rules = []
        if self.unused_after_days:
            rules.append(f"blobs not used for {self.unused_after_days} day(s)")
        if self.storage_limit:
            rules.append(f"least recently used blobs above {self.storage_limit} bytes per organization")
        return "eviction on: " + "; ".join(rules)

    def in_words(self):
        """The rules for people: what goes, and when."""
        if not self.enabled:
            return "Nothing is evicted: blobs stay until an operator evicts them."
        rules = []
        if self.unused_after_days:
            days = self.unused_after_days
            rules.append(f"blobs not downloaded for {days} day{'s' if days != 1 else ''} are evicted")
        if self.storage_limit:
            rules.append(f"above {_size(self.storage_limit)} the least recently used blobs go first")
        text = "; ".join(rules)
        return text[0].upper() + text[1:] + "."


def eviction_policy(organization=None):
    """The defaults from the environment; with `organization`, its own overrides applied."""
    unused_after, limit, overridden = settings.EVICT_UNUSED_AFTER, settings.ORG_STORAGE_LIMIT, set()
    if organization is not None:
        own = StoragePolicy.objects.filter(organization=organization).first()
        if own is not None and own.unused_after_days is not None:
            unused_after = own.unused_after_days
            overridden.add("unused_after_days")
        if own is not None and own.storage_limit is not None:
            limit = own.storage_limit
            overridden.add("storage_limit")
    return EvictionPolicy(unused_after, limit, frozenset(overridden))


KEEP = object()


def set_storage_policy(organization, actor, storage_limit=KEEP, unused_after_days=KEEP):
    """Change the organization's overrides (None: follow the default) and audit the change
    when something changed. Returns the StoragePolicy."""
    with transaction.atomic():
        policy, _ = StoragePolicy.objects.select_for_update().get_or_create(organization=organization)
        before = {"storage_limit": policy.storage_limit, "unused_after_days": policy.unused_after_days}
        if storage_limit is not KEEP:
            policy.storage_limit = storage_limit
        if unused_after_days is not KEEP:
            policy.unused_after_days = unused_after_days
        after = {"storage_limit": policy.storage_limit, "unused_after_days": policy.unused_after_days}
        if after == before:
            return policy
        actor = audit.as_actor(actor)
        policy.updated_at = timezone.now()
        policy.updated_by = actor.user
        policy.save()
        changed = {name: {"from": before[name], "to": after[name]} for name in after if after[name] != before[name]}
        audit.record(
            organization, actor, Action.STORAGE_POLICY_CHANGED,
            target="; ".join(_setting_words(name, c["to"]) for name, c in changed.items()),
            details={"changed": changed},
        )
    return policy


def _setting_words(name, value):
    label = {"storage_limit": "storage limit", "unused_after_days": "evict unused after"}[name]
    if value is None:
        return f"{label}: the default"
    if name == "storage_limit":
        return f"{label}: {_size(value)} ({value} bytes)" if value else f"{label}: none"
    return f"{label}: {value} days" if value else f"{label}: never"


@dataclass
class Report:
    """What one pass deleted (or, dry, would delete) in one organization.

    `counts` and `bytes` cover everything. `items` holds, per kind, the objects
    themselves (MountSnapshot, PendingExport or Blob rows as they were read), in the
    order the pass takes them, up to `item_limit` per kind (None: all of them; 0, the
    default of scheduled passes: none, so that a pass over a large organization does not
    keep its rows in memory)."""

    organization: str
    dry_run: bool = False
    grace: timedelta = timedelta(0)
    policy: EvictionPolicy = field(default_factory=EvictionPolicy)
    counts: dict = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    bytes: dict = field(default_factory=lambda: dict.fromkeys(BLOB_KINDS, 0))
    items: dict = field(default_factory=lambda: {kind: [] for kind in KINDS})
    item_limit: int | None = 0
    # Blobs the store failed to delete: row and bytes both kept for the next pass.
    kept: int = 0
    error: str = ""

    def wants_items(self, kind):
        return self.item_limit is None or len(self.items[kind]) < self.item_limit

    def add(self, kind, size=0, item=None):
        self.counts[kind] += 1
        if kind in self.bytes:
            self.bytes[kind] += size or 0
        if item is not None and self.wants_items(kind):
            self.items[kind].append(item)

    def unlisted(self, kind):
        """How many of `kind` the pass counted but `items` does not hold."""
        return self.counts[kind] - len(self.items[kind])

    @property
    def freed_bytes(self):
        return sum(self.bytes.values())

    def summary(self):
        parts = [f"{kind}={count}" for kind, count in self.counts.items()]
        parts += [f"{kind}_bytes={size}" for kind, size in self.bytes.items()]
        parts.append(f"kept_after_store_errors={self.kept}")
        return f"gc org={self.organization} dry_run={self.dry_run} " + " ".join(parts)


def grace(organization):
    """How long unreferenced blobs, released snapshots and failed uploads are kept: at
    least BLOB_URL_LIFETIME plus the organization's export timeout, longer if GC_GRACE
    says so. Shorter would delete blobs uploaded for a /layers still to come."""
    least = settings.BLOB_URL_LIFETIME + organization.export_timeout
    return timedelta(seconds=max(settings.GC_GRACE, least))


def collect_garbage(organization=None, dry_run=False, item_limit=0, log_summary=True, actor=None, run_by=None):
    """One pass over `organization`, or over every organization; dry, `preview` of each.
    A failure in one organization is logged and reported, and the others are still
    collected. Each pass is recorded (LifecyclePass) with `run_by` (default: from the
    actor: schedule, "command NAME", a user name), and one that deleted something is
    audited with `actor`: the user or command (audit.services.command) that started it,
    or, by default, "policy" for the scheduled pass; the eviction counters' reason
    follows it. `item_limit`: see Report; `log_summary`: see collect_organization."""
    actor = audit.POLICY if actor is None else audit.as_actor(actor)
    if run_by is None:
        run_by = _run_by(actor)
    # Buffered use counts of this process (blobs.services.record_use) must be in the rows
    # before eviction reads them.
    flush_uses()
    organizations = [organization] if organization is not None else Organization.objects.order_by("slug")
    # The pass keeps the names of up to audit.NAMES_KEPT items per kind for its record,
    # whatever the caller asked to see.
    kept_limit = None if item_limit is None else max(item_limit, audit.NAMES_KEPT)
    reports = []
    for org in organizations:
        started = timezone.now()
        # Made here, not in collect_organization: what a pass deleted before it failed
        # must still be recorded and audited.
        report = Report(org.slug, dry_run=dry_run, item_limit=kept_limit)
        try:
            if dry_run:
                flush_uses()
            collect_organization(org, dry_run=dry_run, log_summary=log_summary, report=report)
        except Exception as exc:
            log.exception("gc org=%s failed", org.slug)
            report.error = f"{type(exc).__name__}: {exc}"
        finally:
            # A failure to record one pass must not stop the passes over the others.
            try:
                _record_pass(org, report, started, run_by, actor)
            except Exception:
                log.exception("gc org=%s: could not record the pass: %s", org.slug, report.summary())
        if item_limit is not None:
            for kind in KINDS:
                del report.items[kind][item_limit:]
        report.item_limit = item_limit
        reports.append(report)
    return reports


def item_name(kind, item):
    """How a pass's record and the audit log name a deleted item."""
    if kind in BLOB_KINDS:
        return item.digest
    if kind in (RELEASED_SNAPSHOTS, FAILED_SNAPSHOTS):
        return f"snapshot {item.pk} of mount {item.mount.name}: {item.digest}"
    return f"export of record {item.record.identity} (ref {item.cache_ref_id})"


def _run_by(actor):
    if actor.kind == ActorKind.POLICY:
        return "schedule"
    if actor.kind == ActorKind.COMMAND:
        return f"command {actor.name}".strip()
    return actor.name or actor.kind


def _record_pass(organization, report, started, run_by, actor=audit.POLICY):
    items = {kind: audit.names(item_name(kind, item) for item in rows) for kind, rows in report.items.items() if rows}
    record = LifecyclePass.objects.create(
        organization=organization,
        started_at=started,
        finished_at=timezone.now(),
        dry_run=report.dry_run,
        run_by=run_by[:150],
        counts={kind: n for kind, n in report.counts.items() if n},
        bytes={kind: n for kind, n in report.bytes.items() if n},
        freed_bytes=report.freed_bytes,
        kept=report.kept,
        error=report.error,
        items=items,
    )
    deleted = sum(report.counts.values())
    if report.dry_run or not deleted:
        return record
    blobs = sum(report.counts[kind] for kind in BLOB_KINDS)
    audit.record(
        organization,
        actor,
        Action.LIFECYCLE_DELETED,
        target=describe_counts(report.counts),
        bytes_freed=report.freed_bytes,
        evicted=blobs,
        details={"pass": record.pk, "run_by": run_by, "counts": record.counts, "items": items,
                 **({"error": report.error} if report.error else {})},
    )
    return record


def describe_counts(counts):
    """"3 unreferenced blobs, 1 released snapshots": the kinds with something, in pass order."""
    parts = [f"{counts.get(kind, 0)} {label}" for kind, label in KINDS.items() if counts.get(kind)]
    return ", ".join(parts) or "nothing"


def passes(organization):
    """The organization's pass records, newest first: the Policy page's last passes and
    the API's list are both this."""
    return LifecyclePass.objects.filter(organization=organization).order_by("-started_at", "-pk")


def next_pass_at(organization, now=None):
    """When the scheduled pass runs next: CACHEWEB_GC_INTERVAL after the last scheduled
    one (beat counts from its own start, so this is an estimate); None before the first."""
    last = (
        LifecyclePass.objects.filter(organization=organization, run_by="schedule")
        .order_by("-started_at")
        .values_list("started_at", flat=True)
        .first()
    )
    if last is None:
        return None
    due = last + timedelta(seconds=settings.GC_INTERVAL)
    return max(due, now or timezone.now())


def prune_passes(now=None):
    """Pass records older than CACHEWEB_AUDIT_DAYS go, as audit entries do."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.AUDIT_DAYS)
    deleted, _ = LifecyclePass.objects.filter(started_at__lt=cutoff).delete()
    return deleted


def steps_of_blobs(organization, digests, limit=None):
    """The current results (steps) whose layer chain uses one of `digests`: evicting the
    blobs takes them out of /import until an engine exports them again."""
    rows = (
        current_results(organization)
        .filter(chain_layers__layer__digest__in=list(digests))
        .select_related("record")
        .distinct()
        .order_by("-chain_size", "pk")
    )
    return list(rows if limit is None else rows[:limit])


def collect_organization(organization, dry_run=False, item_limit=0, log_summary=True, report=None):
    """One pass over one organization. A real pass logs a one-line summary unless
    `log_summary` is False (manage.py gc shows the report itself, and the log would only
    repeat it); a dry run never does. With `report` (a fresh Report; its dry_run and
    item_limit are used) the pass counts into it as it goes, so that the caller still
    holds what was deleted when the pass raises."""
    now = timezone.now()
    if report is None:
        report = Report(organization.slug, dry_run=dry_run, item_limit=item_limit)
    dry_run = report.dry_run
    report.grace = grace(organization)
    report.policy = eviction_policy(organization)
    cutoff = now - report.grace
    _delete_snapshots(organization, cutoff, report, dry_run)
    _delete_pending_exports(organization, now, report, dry_run)
    deleter = _BlobDeleter(organization, report)
    collected_verified = _collect_blobs(organization, cutoff, deleter, report, dry_run)
    _evict(organization, now, cutoff, deleter, report, dry_run, collected_verified, report.policy)
    if log_summary and not dry_run:
        log.info(report.summary())
    return report


def preview(organization, limit=50):
    """What a pass over `organization` would delete now, deleting nothing: a dry-run
    Report whose `items` hold the rows themselves, up to `limit` per kind (None: all),
    in the order the pass would take them; `counts` and `bytes` cover everything. A real
    pass run right after, with nothing changed in between, deletes exactly these."""
    flush_uses()
    return collect_organization(organization, dry_run=True, item_limit=limit)


# ---- rows ------------------------------------------------------------------------------


def _delete_rows(queryset, kind, report, dry_run):
    queryset = queryset.order_by("pk")
    if dry_run:
        report.counts[kind] += queryset.count()
        if report.item_limit != 0:
            listed = queryset if report.item_limit is None else queryset[: report.item_limit]
            report.items[kind].extend(listed)
        return
    model = queryset.model
    while pks := list(queryset.values_list("pk", flat=True)[:BATCH]):
        rows = list(queryset.filter(pk__in=pks)) if report.wants_items(kind) else []
        _, by_model = model.objects.filter(pk__in=pks).delete()
        report.counts[kind] += by_model.get(model._meta.label, 0)
        for row in rows:
            if report.wants_items(kind):
                report.items[kind].append(row)


def _delete_snapshots(organization, cutoff, report, dry_run):
    snapshots = MountSnapshot.objects.filter(mount__organization=organization).select_related("mount")
    _delete_rows(snapshots.filter(released_at__lt=cutoff), RELEASED_SNAPSHOTS, report, dry_run)
    failed = snapshots.filter(state=SnapshotState.FAILED, released_at__isnull=True).filter(
        Q(failed_at__lt=cutoff) | Q(failed_at__isnull=True, created_at__lt=cutoff)
    )
    _delete_rows(failed, FAILED_SNAPSHOTS, report, dry_run)


def _delete_pending_exports(organization, now, report, dry_run):
    # Twice the back-off: a record asked for again after export_retry_after has its row
    # refreshed, so an older row belongs to a ref no engine exports any more. The row
    # carries what the engine said about the result until /layers delivers it.
    kept = 2 * export_retry_after(organization)
    stale = PendingExport.objects.filter(
        record__organization=organization, asked_at__lt=now - timedelta(seconds=kept)
    ).select_related("record")
    _delete_rows(stale, PENDING_EXPORTS, report, dry_run)


# ---- blobs -----------------------------------------------------------------------------


class _BlobDeleter:
    """Deletes one blob at a time with delete_blob (bytes first, then the row): a row is
    never left promising bytes that are gone. Bytes already gone are no error."""

    def __init__(self, organization, report):
        self.organization = organization
        self.report = report
        self.failures_in_a_row = 0

    @property
    def gave_up(self):
        return self.failures_in_a_row >= STORE_FAILURES_TO_GIVE_UP

    def delete(self, digest):
        """The bytes freed (delete_blob's answer), or None when the blob was kept."""
        if self.gave_up:
            return None
        try:
            freed = delete_blob(self.organization, digest)
        except (StoreUnavailable, OSError) as exc:
            self.failures_in_a_row += 1
            self.report.kept += 1
            log.warning("gc org=%s: could not delete blob %s, kept for the next pass: %s",
                        self.organization.slug, digest, exc)
            if self.gave_up:
                log.warning("gc org=%s: %d deletions failed in a row; the store looks down, "
                            "leaving the other blobs for the next pass", self.organization.slug,
                            self.failures_in_a_row)
            return None
        self.failures_in_a_row = 0
        return freed


def _blobs(organization, cutoff):
    """The organization's blobs, each annotated with `in_layer` (a layer of the
    organization names its digest) and `settled` (nothing created, verified or used it
    since `cutoff`)."""
    settled = Q(created_at__lt=cutoff)
    settled &= Q(verified_at__isnull=True) | Q(verified_at__lt=cutoff)
    settled &= Q(last_used_at__isnull=True) | Q(last_used_at__lt=cutoff)
    return Blob.objects.filter(organization=organization).only(*BLOB_FIELDS).annotate(
        in_layer=Exists(Layer.objects.filter(organization=OuterRef("organization"), digest=OuterRef("digest"))),
        settled=ExpressionWrapper(settled, output_field=BooleanField()),
    )


def _collect_blobs(organization, cutoff, deleter, report, dry_run):
    """Delete the unreferenced, settled blobs. Returns the bytes of the verified ones
    among them (a dry run's eviction must not count them a second time)."""
    candidates = _blobs(organization, cutoff).filter(in_layer=False, settled=True)
    verified_bytes = 0
    last_pk = 0
    while not deleter.gave_up:
        batch = list(candidates.filter(pk__gt=last_pk).order_by("pk")[:BATCH])
        if not batch:
            break
        last_pk = batch[-1].pk
        needed = referenced_digests(organization, [blob.digest for blob in batch])
        for blob in batch:
            if blob.digest in needed:
                continue
            freed = _verified_size(blob) if dry_run else deleter.delete(blob.digest)
            if freed is not None:
                report.add(UNREFERENCED_BLOBS, freed, blob)
                verified_bytes += freed
    return verified_bytes


def _verified_size(blob):
    """What a dry run counts as freed: what delete_blob would answer."""
    return (blob.size or 0) if blob.state == BlobState.VERIFIED else 0


def _evict(organization, now, cutoff, deleter, report, dry_run, collected_verified, policy):
    """Evict verified blobs in least-recently-used order: those unused since before
    `policy`'s unused-after days, then more while the organization is above its limit."""
    limit = policy.storage_limit
    unused_before = now - timedelta(days=policy.unused_after_days) if policy.unused_after_days else None
    if not limit and unused_before is None:
        return
    # A dry run deletes nothing, so it counts down from one reading; a real pass reads the
    # total again with each batch (below).
    total = _verified_bytes(organization) - collected_verified if dry_run else 0
    verified = (
        _blobs(organization, cutoff)
        .filter(state=BlobState.VERIFIED)
        # An upload counts as a use: a blob uploaded again after its bytes were lost is
        # as fresh as that upload, however long ago its last download was. (Greatest of
        # two non-null terms: SQLite's MAX() is NULL when any argument is.)
        .annotate(
            last_use=Greatest(
                Coalesce("last_used_at", "verified_at", "created_at"), Coalesce("verified_at", "created_at")
            )
        )
        .order_by("last_use", "pk")
    )
    cursor = None
    while not deleter.gave_up:
        page = verified
        if cursor is not None:
            page = page.filter(Q(last_use__gt=cursor[0]) | Q(last_use=cursor[0], pk__gt=cursor[1]))
        if not dry_run:
            # Read again with each batch, right before its rows: another pass running at
            # the same time (manage.py gc during the scheduled one, or a pass outlasting
            # the interval) may have evicted some since, and a total read earlier would
            # evict that much again.
            total = _verified_bytes(organization)
        batch = list(page[:BATCH])
        if not batch:
            return
        needed = referenced_digests(organization, [blob.digest for blob in batch]) if dry_run else set()
        plan = []
        planned_total = total
        reached_enough = False
        for blob in batch:
            size = blob.size or 0
            if dry_run and blob.settled and not blob.in_layer and blob.digest not in needed:
                # Already counted as unreferenced: the real pass deletes it before this point.
                cursor = (blob.last_use, blob.pk)
                continue
            if unused_before is not None and blob.last_use < unused_before:
                kind = UNUSED_BLOBS
            elif limit and planned_total > limit:
                kind = OVER_LIMIT_BLOBS
            else:
                reached_enough = True
                break
            cursor = (blob.last_use, blob.pk)
            plan.append((blob, kind))
            planned_total -= size
        total -= _carry_out(organization, plan, deleter, report, dry_run)
        # A deletion the store refused leaves the organization above its limit: go on
        # from the first blob not evicted.
        if reached_enough and not (limit and total > limit):
            return


def _verified_bytes(organization):
    total = Blob.objects.filter(organization=organization, state=BlobState.VERIFIED).aggregate(total=Sum("size"))
    return total["total"] or 0


def _carry_out(organization, plan, deleter, report, dry_run):
    """Evict the planned blobs; returns the bytes freed."""
    if not plan:
        return 0
    if dry_run:
        for blob, kind in plan:
            report.add(kind, _verified_size(blob), blob)
        return sum(_verified_size(blob) for blob, _ in plan)
    digests = [blob.digest for blob, _ in plan]
    # Results using these blobs are marked incomplete before the bytes go, once for the
    # whole batch: /import stops naming them, /records asks for them again, and the
    # import is rebuilt once per batch rather than once per blob (deleting each row then
    # finds nothing left to mark). A blob the store then fails to delete is only exported
    # again: the chain delivered anew is complete again.
    blobs_lost(organization, digests)
    # (Live snapshots of an evicted blob are released by mounts.receivers on its deletion.)
    freed = 0
    for blob, kind in plan:
        size = deleter.delete(blob.digest)
        if size is not None:
            report.add(kind, size, blob)
            freed += size
    return freed


def stored_bytes(organization):
    """The bytes the storage limit is measured against: the organization's verified blobs."""
    return _verified_bytes(organization)
