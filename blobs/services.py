"""Blob bookkeeping and URLs: the API other apps use.

Public functions (keep their names and meaning, other apps call them):

    validate_digest(digest) -> str
    verified_blob_sizes(organization, digests) -> {digest: size}
    has_verified_blob(organization, digest) -> bool
    upload_target(request, organization, digest, size=None) -> {"URL": str, "Headers": {str: str}}
    upload_answer(request, organization, digest, size=None) -> {"URL", "Headers", "Skip"}
    download_url(request, organization, digest) -> str          (raises BlobNotFound)
    confirm_s3_blob(organization, digest, expected_size=None) -> bool
    record_use(organization, digest) -> None
    flush_uses() -> int
    receive_upload(org_id, digest, body, content_length, bound_size) -> Blob
    open_builtin_blob(org_id, digest) -> (file, size)
    delete_blob(organization, digest, actor=None) -> bytes freed (0 unless verified)
    rehash_blobs(organization, verified_since=None) -> (checked, [lost digests])

A blob belongs to one organization. Nothing here ever answers from another
organization's blobs: two organizations uploading the same digest store it twice.
"""

import logging
import os
import re
import threading
import urllib.parse
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.urls import reverse
from django.utils import timezone

from accounts.models import Organization
from audit import services as audit
from audit.models import Action
from blobs import identity, signing
from blobs.models import Blob, BlobState
from blobs.signals import blob_lost, blob_verified, blobs_used
from blobs.storage import StoreUnavailable, UploadRejected, get_store, sha256_b64

log = logging.getLogger("cacheweb.blobs")

QUERY_BATCH = 5000
DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")


class InvalidDigest(ValueError):
    pass


class BlobNotFound(LookupError):
    pass


def validate_digest(digest):
    """`digest` if it is `sha256:` + 64 lower-case hex digits, else InvalidDigest."""
    if not isinstance(digest, str) or not DIGEST_RE.fullmatch(digest):
        raise InvalidDigest("digest must be 'sha256:' followed by 64 lower-case hex digits")
    return digest


def _validate_size(size):
    if size is None:
        return None
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ValueError("size must be a non-negative integer")
    return size


def verified_blob_sizes(organization, digests):
    """{digest: size} for those of `digests` that this organization holds, verified.

    With S3 storage, blobs still pending (an upload URL was issued; the engine may since
    have PUT the object) are confirmed here first with a HEAD, so that /layers trusts
    exactly the objects that exist with the right size and checksum."""
    digests = list(set(digests))
    found = {}
    pending = []
    for start in range(0, len(digests), QUERY_BATCH):
        rows = Blob.objects.filter(
            organization=organization, digest__in=digests[start : start + QUERY_BATCH]
        ).values_list("digest", "size", "state")
        for digest, size, state in rows:
            if state == BlobState.VERIFIED:
                found[digest] = size
            else:
                pending.append(digest)
    store = get_store()
    if store.kind == "filesystem":
        found = _drop_lost_files(store, organization, found)
    if pending and store.kind == "s3":
        for digest in pending:
            if confirm_s3_blob(organization, digest):
                found[digest] = Blob.objects.get(organization=organization, digest=digest).size
    return found


def has_verified_blob(organization, digest):
    """True when this organization holds `digest`, verified. A database check only."""
    return Blob.objects.filter(organization=organization, digest=digest, state=BlobState.VERIFIED).exists()


def _base_url(request):
    if settings.PUBLIC_URL:
        return settings.PUBLIC_URL
    if request is None:
        raise RuntimeError("blob URLs outside a request need CACHEWEB_PUBLIC_URL")
    return request.build_absolute_uri("/").rstrip("/")


def _builtin_url(request, organization, digest, method, size=None):
    query = signing.signed_query(organization.pk, digest, method, settings.BLOB_URL_LIFETIME, size=size)
    path = reverse("blob-data", kwargs={"org_id": organization.pk, "digest": digest})
    return f"{_base_url(request)}{path}?{urllib.parse.urlencode(query)}"


def upload_target(request, organization, digest, size=None):
    """Where and how to PUT blob `digest` for `organization`: {"URL": str, "Headers": {}}.

    Built-in storage: a URL on this service, signed for this organization, digest and
    method PUT, expiring after BLOB_URL_LIFETIME, and bound to `size` when given (the
    PUT must then carry exactly that Content-Length). S3: a presigned PUT signed with
    the SHA-256 checksum (and the content length when `size` is given); "Headers"
    carries x-amz-checksum-sha256, which the client must send and the store checks.
    Creates the pending Blob row if there is none (a verified row stays verified).
    Does not decide Skip: see upload_answer. Raises InvalidDigest, ValueError (size)."""
    validate_digest(digest)
    _validate_size(size)
    blob = _pending_row(organization, digest)
    if size is not None and blob.state == BlobState.PENDING and blob.size != size:
        Blob.objects.filter(pk=blob.pk, state=BlobState.PENDING).update(size=size)
    store = get_store()
    if store.kind == "s3":
        url, headers = store.presigned_put(organization.pk, digest, size, settings.BLOB_URL_LIFETIME)
        return {"URL": url, "Headers": headers}
    return {"URL": _builtin_url(request, organization, digest, signing.UPLOAD, size), "Headers": {}}


def upload_answer(request, organization, digest, size=None):
    """The answer to an engine asking to upload: {"URL", "Headers", "Skip"}.

    Skip is true only when this organization holds the verified blob (with S3, a pending
    blob whose object turns out to be there, right, is confirmed first). Then URL is ""
    and Headers empty. Otherwise as upload_target."""
    return upload_decision(request, organization, digest, size)[0]


def upload_decision(request, organization, digest, size=None):
    """(upload_answer's answer, the held blob's size when the answer is Skip, else None)."""
    validate_digest(digest)
    _validate_size(size)
    held = _held_size(organization, digest, size)
    if held is not None:
        return {"URL": "", "Headers": {}, "Skip": True}, held
    return {**upload_target(request, organization, digest, size), "Skip": False}, None


def _held(organization, digest, size=None):
    return _held_size(organization, digest, size) is not None


def _held_size(organization, digest, size=None):
    """The size of this organization's blob `digest` when it holds it (of `size`, when
    given), else None."""
    row = Blob.objects.filter(organization=organization, digest=digest).values_list("state", "size").first()
    if row is None:
        return None
    state, known_size = row
    store = get_store()
    if state == BlobState.VERIFIED:
        if store.kind == "filesystem" and not _file_intact(store, organization, digest, known_size):
            return None
        return known_size if size is None or known_size == size else None
    if store.kind == "s3" and confirm_s3_blob(organization, digest, expected_size=size):
        return Blob.objects.filter(organization=organization, digest=digest).values_list("size", flat=True).first()
    return None


def _file_intact(store, organization, digest, known_size):
    return digest in _drop_lost_files(store, organization, {digest: known_size})


def _drop_lost_files(store, organization, sizes):
    """`sizes` ({digest: size}) without the blobs whose file is gone or has another size.

    A stat, cheap on local disk: a verified row whose file is gone or truncated (a lost or
    restored data dir) goes back to pending, so that engines upload it again instead of
    being told to skip it forever, and blob_lost tells the graph to stop naming it."""
    on_disk = store.sizes(organization.pk, sizes)
    lost = [digest for digest, size in sizes.items() if on_disk[digest] != size]
    if not lost:
        return sizes
    lost_set = set(lost)
    if not identity.recorded_store_is_here(store):
        # Not this database's blob directory (another machine's, or a share that went
        # away): the bytes may well be where they were written. Not held here, so not
        # offered from here, but nothing is marked lost.
        log.error("org=%s: %d verified blob(s) not in %s, which is not this database's blob store; "
                  "none marked lost: %s", organization.slug, len(lost), store.root, ", ".join(lost[:5]))
        return {digest: size for digest, size in sizes.items() if digest not in lost_set}
    log.warning("org=%s: %d verified blob(s) missing or truncated on disk, marked pending: %s",
                organization.slug, len(lost), ", ".join(lost[:5]))
    _mark_lost(organization, lost)
    return {digest: size for digest, size in sizes.items() if digest not in lost_set}


def _mark_lost(organization, digests):
    """Verified rows whose bytes are gone or wrong go back to pending (so engines upload
    them again), and blob_lost tells the graph to stop naming them."""
    for start in range(0, len(digests), QUERY_BATCH):
        Blob.objects.filter(organization=organization, digest__in=digests[start : start + QUERY_BATCH]).update(
            state=BlobState.PENDING, verified_at=None
        )
    blob_lost.send(sender=Blob, organization=organization, digests=digests)


def rehash_blobs(organization, verified_since=None):
    """Read back every verified blob of `organization` (or those verified since a time)
    and check that its bytes still hash to its digest and have its size: after a crash
    of a machine running with CACHEWEB_BLOB_FSYNC off, or a disk that went bad. Bad or
    missing bytes are deleted and their blob marked lost. Returns (checked, [lost]).
    Raises StoreUnavailable when S3 cannot be read."""
    store = get_store()
    if store.kind == "filesystem" and not identity.recorded_store_is_here(store):
        raise StoreUnavailable(f"{store.root} is not this database's blob store: nothing checked")
    rows = Blob.objects.filter(organization=organization, state=BlobState.VERIFIED)
    if verified_since is not None:
        rows = rows.filter(verified_at__gte=verified_since)
    checked, lost = 0, []
    try:
        for digest, size in rows.order_by("digest").values_list("digest", "size").iterator():
            checked += 1
            if store.kind == "filesystem":
                found = store.hash_file(organization.pk, digest)
            else:
                found = store.hash_object(organization.pk, digest) if store.info(organization.pk, digest) else None
            if found != (size, digest):
                lost.append(digest)
                store.delete(organization.pk, digest)
    finally:
        # Also when a later blob could not be read: bytes deleted above must not stay
        # behind a verified row, which S3 callers trust without asking the store.
        if lost:
            log.warning("org=%s: %d verified blob(s) had lost or wrong bytes, deleted and marked pending: %s",
                        organization.slug, len(lost), ", ".join(lost[:5]))
            _mark_lost(organization, lost)
    return checked, lost


def download_url(request, organization, digest):
    """A URL that GETs blob `digest` of `organization` (Range requests honoured), valid
    for BLOB_URL_LIFETIME; built-in: signed for organization, digest and GET/HEAD; S3:
    a presigned GET. Counts as one use of the blob (record_use).
    Raises InvalidDigest, or BlobNotFound when this organization does not hold it."""
    validate_digest(digest)
    if not _held(organization, digest):
        raise BlobNotFound(digest)
    store = get_store()
    if store.kind == "s3":
        url = store.presigned_get(organization.pk, digest, settings.BLOB_URL_LIFETIME)
    else:
        url = _builtin_url(request, organization, digest, signing.DOWNLOAD)
    record_use(organization, digest)
    return url


def _pending_row(organization, digest):
    try:
        blob, _ = Blob.objects.get_or_create(organization=organization, digest=digest)
    except IntegrityError:
        blob = Blob.objects.get(organization=organization, digest=digest)
    return blob


def _mark_verified(organization, digest, size, rewritten=False):
    """Mark the row verified with its true size; send blob_verified on commit when it
    was not verified before. `rewritten`: the bytes were just written again (a built-in
    PUT renames a new file over the old one), so verified_at moves to now as well, for
    `verifyblobs --since` to cover them."""
    now = timezone.now()
    with transaction.atomic():
        blob, _ = Blob.objects.select_for_update().get_or_create(
            organization=organization, digest=digest, defaults={"size": size}
        )
        became_verified = blob.state != BlobState.VERIFIED
        blob.size = size
        blob.state = BlobState.VERIFIED
        if became_verified or rewritten or blob.verified_at is None:
            blob.verified_at = now
        blob.save(update_fields=["size", "state", "verified_at"])
        if became_verified:
            transaction.on_commit(lambda: blob_verified.send(sender=Blob, blob=blob))
    return blob


def confirm_s3_blob(organization, digest, expected_size=None):
    """Is blob `digest` of `organization` really in the store? True when it is verified.

    S3: HEAD the object (with checksum mode); it must exist, be `expected_size` bytes
    when given, and carry the SHA-256 checksum of `digest`. A store that kept no
    checksum has the object streamed and hashed instead. On success the row becomes
    verified (blob_verified sent on commit); an object whose bytes are not `digest` is
    deleted, since its key promises that digest. Built-in storage: the PUT already
    verified, so this is has_verified_blob plus the size check."""
    validate_digest(digest)
    store = get_store()
    if store.kind != "s3":
        row = Blob.objects.filter(organization=organization, digest=digest, state=BlobState.VERIFIED)
        return row.filter(size=expected_size).exists() if expected_size is not None else row.exists()
    try:
        return _confirm_s3(store, organization, digest, expected_size)
    except StoreUnavailable as exc:
        # Unconfirmed is the safe answer: the engine uploads again, /layers waits.
        log.warning("could not confirm s3 blob %s of org %s: %s", digest, organization.slug, exc)
        return False


def _confirm_s3(store, organization, digest, expected_size):
    info = store.info(organization.pk, digest)
    if info is None:
        return False
    if expected_size is not None and info.size != expected_size:
        log.warning("s3 blob %s of org %s is %s bytes, expected %s", digest, organization.slug, info.size, expected_size)
        return False
    if info.checksum_sha256 is not None:
        good = info.checksum_sha256 == sha256_b64(digest)
        size = info.size
    else:
        size, actual = store.hash_object(organization.pk, digest)
        good = actual == digest
    if not good:
        log.warning("s3 blob %s of org %s does not match its digest; deleting it", digest, organization.slug)
        store.delete(organization.pk, digest)
        return False
    _mark_verified(organization, digest, size)
    return True


def receive_upload(org_id, digest, body, content_length, bound_size):
    """Store the body of a built-in PUT: `content_length` bytes from `body` (a reader
    from blobs.body.open_body), which must hash to `digest` (and be `bound_size` bytes
    when the URL was bound to a size).
    `content_length` None means an empty body. Returns the verified Blob. Raises
    UploadRejected (status, message) with nothing kept.
    Putting a blob that is already there verifies the new bytes and answers the same."""
    validate_digest(digest)
    if content_length is None:
        # HTTP/1.1: no Content-Length and not chunked (gunicorn de-chunks and sets one)
        # means an empty body.
        content_length = 0
    if bound_size is not None and content_length != bound_size:
        raise UploadRejected(400, f"Content-Length {content_length} differs from the announced size {bound_size}")
    organization = Organization.objects.filter(pk=org_id).first()
    if organization is None:
        raise UploadRejected(404, "no such organization")
    store = get_store()
    if store.kind != "filesystem":
        raise UploadRejected(404, "this service stores blobs in S3; use the presigned URL")
    size = store.receive(organization.pk, digest, body, content_length)
    return _mark_verified(organization, digest, size, rewritten=True)


def open_builtin_blob(org_id, digest):
    """(binary file open at 0, size) of a blob on the built-in storage, for serving.
    Raises BlobNotFound when the bytes are not there (or blobs live in S3), and when the
    file is not the verified blob's size: after a power cut, a file written without
    fsync can come back short, and is then never served but uploaded again."""
    store = get_store()
    if store.kind != "filesystem":
        raise BlobNotFound("this service stores blobs in S3; ask /magicache/layerDownloadURL again")
    row = Blob.objects.filter(organization_id=org_id, digest=digest).values_list("state", "size").first()
    if row is None or row[0] != BlobState.VERIFIED:
        raise BlobNotFound(f"no blob {digest}")
    try:
        file = store.open(org_id, digest)
    except FileNotFoundError:
        file = None
    size = os.fstat(file.fileno()).st_size if file is not None else None
    if size != row[1]:
        if file is not None:
            file.close()
        organization = Organization.objects.filter(pk=org_id).first()
        if organization is not None:
            _drop_lost_files(store, organization, {digest: row[1]})
        raise BlobNotFound(f"no blob {digest}")
    return file, size


def delete_blob(organization, digest, actor=None):
    """Remove a blob's bytes and its row (eviction). The bytes go first: a row without
    bytes would be trusted, bytes without a row are merely re-verified on upload.
    With `actor` (a user, or audit.services.Actor) the eviction is audited; the services
    that delete blobs as part of a larger eviction audit that instead, and pass none.

    Returns the bytes freed: the size of a verified blob, 0 for any other (a pending
    blob's announced bytes never arrived) or none. Every eviction path counts freed bytes
    with this answer, so that they all follow the one rule."""
    row = Blob.objects.filter(organization=organization, digest=digest).values_list("size", "state").first()
    freed = (row[0] or 0) if row and row[1] == BlobState.VERIFIED else 0
    get_store().delete(organization.pk, digest)
    Blob.objects.filter(organization=organization, digest=digest).delete()
    if actor is not None:
        audit.record(organization, actor, Action.BLOB_EVICTED, target=digest, bytes_freed=freed, evicted=1)
    return freed


# ---- use counting -------------------------------------------------------------------
# A busy engine asks for the same layers over and over; one UPDATE per download URL
# would make the hottest rows the most contended. Uses are counted in memory and
# written at most once per BLOB_USE_WRITE_INTERVAL per blob (the first use of a blob
# is written at once), plus a sweep of everything pending at that same interval and
# at process exit. A crash loses at most one interval of counts, never a blob.

_uses_lock = threading.Lock()
_uses = {}  # (org_id, digest) -> [pending count, last use, last write]
_last_sweep = [None]


def _interval():
    return timedelta(seconds=settings.BLOB_USE_WRITE_INTERVAL)


def record_use(organization, digest, now=None):
    """Count one use of blob `digest` of `organization` (use_count += 1, last_used_at =
    now). Writes are throttled: see the comment above; flush_uses() forces them."""
    now = now or timezone.now()
    key = (organization.pk, digest)
    with _uses_lock:
        entry = _uses.setdefault(key, [0, now, None])
        entry[0] += 1
        entry[1] = now
        due = entry[2] is None or now - entry[2] >= _interval()
        sweep = _last_sweep[0] is None or now - _last_sweep[0] >= _interval()
        writes = []
        if due:
            writes.append((key, entry[0], entry[1]))
            entry[0] = 0
            entry[2] = now
        if sweep:
            _last_sweep[0] = now
            writes += _take_pending(now, exclude=key)
    _write_uses(writes)


def _take_pending(now, exclude=None):
    writes = []
    for other, entry in list(_uses.items()):
        if other == exclude:
            continue
        if entry[0]:
            writes.append((other, entry[0], entry[1]))
            entry[0] = 0
            entry[2] = now
        elif entry[2] is not None and now - entry[2] >= _interval():
            # Idle and written: forget it, so the table stays as small as the hot set.
            del _uses[other]
    return writes


def _write_uses(writes):
    for (org_id, digest), count, last in writes:
        Blob.objects.filter(organization_id=org_id, digest=digest).update(
            use_count=F("use_count") + count, last_used_at=last
        )
    if writes:
        blobs_used.send(sender=Blob, uses=[(org_id, digest, last) for (org_id, digest), _, last in writes])


def flush_uses():
    """Write every pending use count now. Returns how many blobs were written."""
    with _uses_lock:
        writes = _take_pending(timezone.now())
    try:
        _write_uses(writes)
    except Exception:  # at interpreter exit the database may already be gone
        log.exception("could not write %d pending blob use counts", len(writes))
        return 0
    return len(writes)
