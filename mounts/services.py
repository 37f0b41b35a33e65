"""Cache mount sync: which mounts are synced, taking uploads, committing snapshots,
retention, and indexing what is inside them.

Engines download every synced mount's current snapshot at start (synced_mount_config)
and offer each mount they used at shutdown (offer_upload). An accepted offer gets a
blob upload URL and a pending snapshot; the snapshot is committed when its blob is
verified (blob_verified, or the confirmation task polling the store), or failed once the
URL has expired without the blob arriving.
"""

import logging
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Sum
from django.utils import timezone

from activity import attribution
from audit import services as audit
from audit.models import Action
from blobs import contents
from cacheweb import outbox
from blobs import services as blobs
from blobs.models import Blob
from mounts.models import (
    SNAPSHOT_MEDIA_TYPE,
    CacheMount,
    ContentsState,
    MountPolicy,
    MountSnapshot,
    MountSwitch,
    SkipReason,
    SnapshotState,
)
from records.models import Layer

log = logging.getLogger("cacheweb.mounts")

MAX_SIZE = 2**63 - 1
SKIP = {"URL": "", "Headers": {}, "Skip": True}


class InvalidOffer(ValueError):
    pass


@dataclass(frozen=True)
class UploadOffer:
    name: str
    digest: str
    size: int


def validate_mount_name(name):
    """A mount name is user data, whatever the user chose: `/go/pkg/mod`, `C:\\cache`,
    `a/./b`, names with spaces or tabs. Any non-empty string of valid UTF-8 up to
    MOUNT_NAME_MAX_BYTES is accepted and stored exactly. It is never joined into a path
    (blobs are keyed by digest) and templates escape it. Refused: NUL, which PostgreSQL
    text cannot hold, and lone surrogates (`\\ud800` in JSON), which are not UTF-8."""
    if not isinstance(name, str):
        raise InvalidOffer("CacheName must be a string")
    if not name:
        raise InvalidOffer("CacheName is empty")
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidOffer("CacheName is not valid UTF-8 (a lone surrogate)") from None
    limit = settings.MOUNT_NAME_MAX_BYTES
    if len(encoded) > limit:
        raise InvalidOffer(f"CacheName is longer than {limit} bytes of UTF-8")
    if "\x00" in name:
        raise InvalidOffer("CacheName contains NUL")
    return name


def parse_upload_offer(body):
    """The /cacheMountUploadURL body as an UploadOffer; InvalidOffer if malformed."""
    name = validate_mount_name(body.get("CacheName"))
    try:
        digest = blobs.validate_digest(body.get("Digest"))
    except blobs.InvalidDigest as e:
        raise InvalidOffer(f"Digest: {e}") from None
    size = body.get("Size")
    if isinstance(size, bool) or not isinstance(size, int) or not 0 < size <= MAX_SIZE:
        raise InvalidOffer("Size must be a positive integer (bytes)")
    return UploadOffer(name=name, digest=digest, size=size)


# ---- what engines download at start ---------------------------------------------------


def synced_mount_config(request, organization):
    """The /cacheMountConfig entries: every synced mount with its current snapshot and a
    download URL, or an empty URL when nothing is stored for it yet."""
    policy = MountPolicy.for_organization(organization)
    mounts = [m for m in organization.cache_mounts.order_by("name") if m.is_synced(policy)]
    live = (
        MountSnapshot.objects.current()
        .filter(mount__in=mounts)
        .only("mount_id", "digest", "size", "media_type", "verified_at")
    )
    candidates = {}
    for snapshot in live:
        candidates.setdefault(snapshot.mount_id, []).append(snapshot)
    held = blobs.verified_blob_sizes(
        organization, [s.digest for group in candidates.values() for s in group]
    )
    entries = []
    for mount in mounts:
        entry = {"Name": mount.name, "Digest": "", "Size": 0, "MediaType": "", "URL": ""}
        # The newest snapshot whose blob is still held: a blob evicted behind our back
        # must not hand engines a URL that 404s.
        for snapshot in candidates.get(mount.pk, []):
            if snapshot.digest not in held:
                continue
            try:
                url = blobs.download_url(request, organization, snapshot.digest)
            except blobs.BlobNotFound:
                continue
            entry.update(Digest=snapshot.digest, Size=snapshot.size, MediaType=snapshot.media_type, URL=url)
            break
        entries.append(entry)
    return entries


# ---- what engines offer at shutdown ---------------------------------------------------


def _record_mount(organization, name, create, now):
    """The mount `name`, its last_seen moved to now; created when `create` and the
    organization is under its mount count. None when it does not exist (and was not
    created)."""
    mount = CacheMount.objects.filter(organization=organization, name=name).first()
    if mount is None:
        if not create:
            return None
        if CacheMount.objects.filter(organization=organization).count() >= settings.MOUNTS_PER_ORG:
            log.warning("org %s has %d mounts; not recording %r", organization.slug, settings.MOUNTS_PER_ORG, name)
            return None
        try:
            with transaction.atomic():
                return CacheMount.objects.create(organization=organization, name=name, first_seen=now, last_seen=now)
        except IntegrityError:
            # Two engines reported the same new name at once; the other one created it.
            mount = CacheMount.objects.get(organization=organization, name=name)
    CacheMount.objects.filter(pk=mount.pk).update(last_seen=now)
    mount.last_seen = now
    return mount


def current_size_of_other_mounts(organization, exclude_mount):
    """Bytes held by the current snapshots of the organization's other mounts."""
    total = 0
    seen = set()
    live = (
        MountSnapshot.objects.current()
        .filter(mount__organization=organization)
        .exclude(mount=exclude_mount)
        .values_list("mount_id", "size")
    )
    for mount_id, size in live:
        if mount_id not in seen:
            seen.add(mount_id)
            total += size
    return total


def skip_reason(mount, policy, offer):
    """Why `offer` should not be uploaded for `mount`, or '' to take it."""
    if mount.switch == MountSwitch.OFF:
        return SkipReason.SWITCHED_OFF
    if not mount.is_synced(policy):
        return SkipReason.NOT_SYNCED
    current = mount.current_snapshot()
    # Only while its blob is held: a blob deleted as an offer committed a snapshot of it
    # (garbage collection racing 'already held') is not released by the deletion, and
    # answering 'unchanged' would keep the mount without those bytes for good.
    if (
        current is not None
        and current.digest == offer.digest
        and blobs.has_verified_blob(mount.organization, offer.digest)
    ):
        return SkipReason.UNCHANGED
    mount_limit = mount.effective_size_limit()
    if mount_limit and offer.size > mount_limit:
        return SkipReason.MOUNT_LIMIT
    org_limit = policy.effective_size_limit()
    if org_limit and current_size_of_other_mounts(mount.organization, mount) + offer.size > org_limit:
        return SkipReason.ORG_LIMIT
    return SkipReason.NONE


# Skips that are no SkipReason of the mount (activity counters label skips with these).
NOT_RECORDED = "not-recorded"
ALREADY_HELD = "already-held"


def offer_upload(request, token, offer, remote_addr=None, user_agent="", engine=None):
    """Answer an engine offering a new snapshot of a mount.

    Returns ({"URL", "Headers", "Skip"}, why it was skipped: a SkipReason, NOT_RECORDED or
    ALREADY_HELD; "" when an upload URL was given). `engine`: activity.attribution's
    guess of the engine offering, when the caller has one (else guessed here)."""
    organization = token.organization
    now = timezone.now()
    # A read-only token may not write, and that includes growing the mount list: every
    # recorded mount is offered to every engine (the default policy syncs them all), and
    # an untrusted job could fill the organization's mount cap with names of its own.
    mount = _record_mount(organization, offer.name, create=not token.read_only, now=now)
    if mount is None:
        _log_offer(organization, offer, "not recorded (read-only token or mount count cap)")
        return dict(SKIP), NOT_RECORDED
    if token.read_only:
        _note_skip(mount, SkipReason.READ_ONLY)
        _log_offer(organization, offer, SkipReason.READ_ONLY)
        return dict(SKIP), SkipReason.READ_ONLY
    policy = MountPolicy.for_organization(organization)
    reason = skip_reason(mount, policy, offer)
    if reason:
        _note_skip(mount, reason, synced_at=now if reason == SkipReason.UNCHANGED else None)
        _log_offer(organization, offer, reason)
        return dict(SKIP), reason

    if engine is None:
        engine = attribution.guess(token, remote_addr)
    uploader = {
        "token": token,
        "engine_id": engine.pk if engine else None,
        "remote_addr": remote_addr,
        "user_agent": (user_agent or "")[:500],
    }
    if blobs.verified_blob_sizes(organization, [offer.digest]).get(offer.digest) == offer.size:
        # The organization already holds these bytes (a mount going back to an earlier
        # state, or two mounts with the same contents): commit without an upload.
        with transaction.atomic():
            snapshot = _pending_snapshot(mount, offer, expires_at=None, **uploader)
            commit_snapshot(snapshot.pk)
        _log_offer(organization, offer, "already held")
        return dict(SKIP), ALREADY_HELD

    target = blobs.upload_target(request, organization, offer.digest, offer.size)
    expires_at = now + timedelta(seconds=settings.BLOB_URL_LIFETIME)
    with transaction.atomic():
        snapshot = _pending_snapshot(mount, offer, expires_at=expires_at, **uploader)
        CacheMount.objects.filter(pk=mount.pk).update(last_skip_reason=SkipReason.NONE)
        _queue_confirmation(snapshot.pk, expires_at)
    _log_offer(organization, offer, "upload")
    return {"URL": target["URL"], "Headers": target["Headers"], "Skip": False}, ""


def _log_offer(organization, offer, decision):
    log.info(
        "mount offer org=%s mount=%r digest=%s size=%d decision=%s",
        organization.slug, offer.name, offer.digest, offer.size, decision or "upload",
    )


def _note_skip(mount, reason, synced_at=None):
    fields = {"last_skip_reason": reason}
    if synced_at is not None:
        fields["last_synced_at"] = synced_at
    CacheMount.objects.filter(pk=mount.pk).update(**fields)


def _pending_snapshot(mount, offer, expires_at, token, engine_id, remote_addr, user_agent):
    """The pending snapshot of `mount` for this digest, created or refreshed (an engine
    retrying gets a new URL, so the snapshot waits for the later expiry)."""
    fields = {
        "size": offer.size,
        "media_type": SNAPSHOT_MEDIA_TYPE,
        "expires_at": expires_at,
        "token": token,
        "engine_id": engine_id,
        "remote_addr": remote_addr,
        "user_agent": user_agent,
    }
    existing = MountSnapshot.objects.select_for_update().filter(
        mount=mount, digest=offer.digest, state=SnapshotState.PENDING
    ).first()
    if existing is None:
        try:
            with transaction.atomic():
                return MountSnapshot.objects.create(mount=mount, digest=offer.digest, **fields)
        except IntegrityError:
            # Another engine offered the same digest for this mount a moment ago.
            existing = MountSnapshot.objects.get(mount=mount, digest=offer.digest, state=SnapshotState.PENDING)
    MountSnapshot.objects.filter(pk=existing.pk).update(**fields)
    return existing


def _queue_confirmation(snapshot_id, expires_at):
    """Inside the offer's transaction: recorded there, published once it commits."""
    from mounts import tasks

    outbox.enqueue(tasks.confirm_snapshot_upload, [snapshot_id], countdown=confirm_delay(expires_at))


# ---- committing -----------------------------------------------------------------------


def commit_snapshot(snapshot_id):
    """Make a pending snapshot its mount's current one, release snapshots beyond
    retention and queue its contents index. Idempotent: False if it was not pending."""
    now = timezone.now()
    with transaction.atomic():
        updated = MountSnapshot.objects.filter(pk=snapshot_id, state=SnapshotState.PENDING).update(
            state=SnapshotState.VERIFIED, verified_at=now, expires_at=None
        )
        if not updated:
            return False
        snapshot = MountSnapshot.objects.select_related("mount__organization").get(pk=snapshot_id)
        CacheMount.objects.filter(pk=snapshot.mount_id).update(last_synced_at=now, last_skip_reason="")
        release_old_snapshots(snapshot.mount, now=now)
        queue_index(snapshot_id)
    log.info(
        "mount snapshot committed org=%s mount=%r digest=%s size=%d",
        snapshot.mount.organization.slug, snapshot.mount.name, snapshot.digest, snapshot.size,
    )
    return True


def commit_snapshots_for_blob(organization_id, digest, size):
    """A blob became verified: commit every snapshot that was waiting for it."""
    waiting = MountSnapshot.objects.filter(
        mount__organization_id=organization_id, digest=digest, size=size, state=SnapshotState.PENDING
    ).values_list("pk", flat=True)
    return sum(commit_snapshot(pk) for pk in list(waiting))


def release_old_snapshots(mount, keep=None, now=None):
    """Release live snapshots beyond the current one and `keep` older ones (the
    MOUNT_SNAPSHOTS_KEPT setting by default). Returns how many were released."""
    keep = settings.MOUNT_SNAPSHOTS_KEPT if keep is None else keep
    live = list(MountSnapshot.objects.current().filter(mount=mount).values_list("pk", flat=True))
    stale = live[keep + 1 :]
    if not stale:
        return 0
    return MountSnapshot.objects.filter(pk__in=stale).update(released_at=now or timezone.now())


def referenced_digests(organization, digests=None):
    """Digests that unreleased snapshots still need (of `digests` only, when given):
    garbage collection must keep these blobs even when a released snapshot names the
    same digest."""
    needing = MountSnapshot.objects.filter(mount__organization=organization, released_at__isnull=True)
    if digests is not None:
        needing = needing.filter(digest__in=digests)
    return set(needing.exclude(state=SnapshotState.FAILED).values_list("digest", flat=True))


def released_digests(organization):
    """Digests given up by mounts and not needed by any other snapshot: candidates for
    garbage collection (which must still check that no layer uses them)."""
    released = set(
        MountSnapshot.objects.filter(mount__organization=organization, released_at__isnull=False).values_list(
            "digest", flat=True
        )
    )
    return released - referenced_digests(organization)


def organization_mount_bytes(organization):
    """Bytes held by all live snapshots of the organization (current and retained)."""
    live = MountSnapshot.objects.live().filter(mount__organization=organization)
    return live.aggregate(total=Sum("size"))["total"] or 0


def evict_mount(mount, actor=None):
    """Delete every snapshot of `mount`, then the blobs they held that nothing else needs:
    no unreleased snapshot of another mount of the organization and no layer of its cache
    graph. The mount itself stays (its switch and limit are settings; engines upload it
    again at their next sync). Returns (snapshots deleted, {digest: bytes freed} of blobs
    deleted; 0 for a pending blob, whose announced bytes never arrived). With `actor`
    the eviction is audited, also when the store fails part way (what went by then).
    """
    organization = mount.organization
    with transaction.atomic():
        digests = set(mount.snapshots.values_list("digest", flat=True))
        deleted, _ = mount.snapshots.all().delete()
    # Decided after the snapshots are gone, so that they no longer count as holders.
    still_needed = referenced_digests(organization, digests)
    still_needed.update(
        Layer.objects.filter(organization=organization, digest__in=digests).values_list("digest", flat=True)
    )
    unneeded = sorted(
        Blob.objects.filter(organization=organization, digest__in=digests - still_needed).values_list(
            "digest", flat=True
        )
    )
    deleted_blobs = {}
    try:
        for digest in unneeded:
            deleted_blobs[digest] = blobs.delete_blob(organization, digest)
    finally:
        if actor is not None:
            audit.record(
                organization, actor, Action.MOUNT_EVICTED,
                target=f"mount {mount.name}: {deleted} snapshot(s), {len(deleted_blobs)} blob(s)",
                bytes_freed=sum(deleted_blobs.values()),
                # Blobs, as every eviction counts (the snapshots are in the target).
                evicted=len(deleted_blobs),
                details={"mount": mount.pk, "snapshots": deleted, "blobs": audit.names(deleted_blobs),
                         "complete": len(deleted_blobs) == len(unneeded)},
            )
    log.info(
        "mount evicted org=%s mount=%r snapshots=%d blobs=%d",
        organization.slug, mount.name, deleted, len(deleted_blobs),
    )
    return deleted, deleted_blobs


# ---- confirming uploads ---------------------------------------------------------------

PENDING, VERIFIED, FAILED, DONE = "pending", "verified", "failed", "done"


def give_up_at(expires_at):
    # A PUT that started just before its URL expired may still be finishing.
    return expires_at + timedelta(seconds=settings.MOUNT_UPLOAD_GRACE)


def confirm_delay(expires_at, now=None):
    """Seconds until the next check of a pending upload: the confirmation interval, but
    never past the moment the snapshot would be given up."""
    now = now or timezone.now()
    remaining = (give_up_at(expires_at) - now).total_seconds() if expires_at else 0
    return max(1, min(settings.MOUNT_CONFIRM_INTERVAL, int(remaining) + 1))


def confirm_snapshot_upload(snapshot_id):
    """Check whether a pending snapshot's blob has arrived (with S3, by asking the store;
    the blob is then verified by size and checksum). Commits it, fails it once its URL
    has expired, or returns PENDING to be asked again. Safe to run any number of times."""
    snapshot = MountSnapshot.objects.select_related("mount__organization").filter(pk=snapshot_id).first()
    if snapshot is None or snapshot.state != SnapshotState.PENDING:
        return DONE
    organization = snapshot.mount.organization
    if blobs.confirm_s3_blob(organization, snapshot.digest, expected_size=snapshot.size):
        commit_snapshot(snapshot.pk)
        return VERIFIED
    now = timezone.now()
    if snapshot.expires_at is not None and now < give_up_at(snapshot.expires_at):
        return PENDING
    failed = MountSnapshot.objects.filter(pk=snapshot.pk, state=SnapshotState.PENDING).update(
        state=SnapshotState.FAILED, failed_at=now, error="the upload URL expired before the blob arrived"
    )
    if failed:
        log.warning(
            "mount snapshot failed org=%s mount=%r digest=%s: never arrived",
            organization.slug, snapshot.mount.name, snapshot.digest,
        )
    return FAILED if failed else DONE


def sweep_pending_snapshots(batch=500):
    """Settle pending snapshots past their give-up time whose confirmation task was lost
    (a worker killed mid-retry, a purged queue): confirm or fail each one. Failed ones are
    deleted later by the storage lifecycle pass (retention). Returns {outcome: count}."""
    now = timezone.now()
    cutoff = now - timedelta(seconds=settings.MOUNT_UPLOAD_GRACE)
    stale = MountSnapshot.objects.filter(state=SnapshotState.PENDING, expires_at__lt=cutoff)
    outcomes = {}
    for pk in list(stale.order_by("expires_at").values_list("pk", flat=True)[:batch]):
        outcome = confirm_snapshot_upload(pk)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    return outcomes


def next_confirmation_delay(snapshot_id):
    expires_at = MountSnapshot.objects.filter(pk=snapshot_id).values_list("expires_at", flat=True).first()
    return confirm_delay(expires_at)


# ---- contents -------------------------------------------------------------------------


def queue_index(snapshot_id, force=False):
    """Inside the committing transaction: recorded there, published once it commits."""
    from mounts import tasks

    outbox.enqueue(tasks.index_snapshot_contents, [snapshot_id], {"force": True} if force else None)


def index_snapshot_contents(snapshot_id, force=False):
    """Read the snapshot's blob and store what is inside it. Skips snapshots already
    indexed unless `force`; returns the snapshot, or None if there is nothing to index."""
    snapshot = MountSnapshot.objects.select_related("mount__organization").filter(pk=snapshot_id).first()
    if snapshot is None or snapshot.state != SnapshotState.VERIFIED:
        return None
    if snapshot.contents_state and not force:
        return snapshot
    fields = None if force else _index_of_same_blob(snapshot)
    if fields is None:
        try:
            summary = contents.index_blob(snapshot.mount.organization, snapshot.digest)
        except contents.BlobMissing:
            log.warning("mount snapshot %s: blob %s is gone, not indexed", snapshot.pk, snapshot.digest)
            return None
        fields = {
            "contents_state": ContentsState(summary.status),
            "contents": summary.as_dict(),
            "file_count": summary.files,
            "uncompressed_bytes": summary.total_bytes,
            "indexed_at": timezone.now(),
        }
    MountSnapshot.objects.filter(pk=snapshot.pk).update(**fields)
    for name, value in fields.items():
        setattr(snapshot, name, value)
    return snapshot


INDEX_FIELDS = ["contents_state", "contents", "file_count", "uncompressed_bytes", "indexed_at"]


def _index_of_same_blob(snapshot):
    """The index of another snapshot of the organization with the same digest (a mount
    back to an earlier state, or two identical mounts): the bytes are the same, so a
    multi-gigabyte blob need not be read again."""
    twin = (
        MountSnapshot.objects.filter(mount__organization_id=snapshot.mount.organization_id, digest=snapshot.digest)
        .exclude(pk=snapshot.pk)
        .exclude(contents_state="")
        .values(*INDEX_FIELDS)
        .first()
    )
    return twin
