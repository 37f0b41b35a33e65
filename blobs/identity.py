"""Which blob directory is the built-in store of this database.

Blob rows live in the database; their bytes in one directory (STORAGES["blobs"]). Web
processes scaled out over machines must all see that same directory (one shared
filesystem): a process started on a directory of its own finds none of the other
processes' blobs, and would take each one it is asked for as lost, mark it pending and
drop its results from /import. So the directory holds an identity, a random id written
into it on first use (IDENTITY_FILE) and recorded in the database (StoreIdentity):

- check_store() runs as a web process starts (cacheweb/gunicorn_conf.py) and refuses a
  directory whose id is missing or another than the database's;
- recorded_store_is_here() is asked before anything is marked lost, so a process whose
  directory went away later (an unmounted share) loses nothing either.

A database from before this check, with blobs but no identity yet, adopts the directory
when some of its newest verified blobs are there; `manage.py blobstore --adopt` makes a
directory the store by hand (a disk replaced on purpose, after which the blobs it lacks
are marked lost as they are asked for and engines upload them again)."""

import os
import uuid

from blobs.models import Blob, BlobState, StoreIdentity
from blobs.storage import get_store

IDENTITY_FILE = "cacheweb-store-id"
# Newest verified blobs looked for when adopting a directory for a database without an
# identity: one of them on disk is enough.
SAMPLE = 20


class WrongBlobDirectory(Exception):
    """This process's blob directory is not the one this database's blobs were written to."""


def _identity_path(store):
    return store.root / IDENTITY_FILE


def read_identity(store):
    """The store id written in the directory, or None."""
    try:
        return _identity_path(store).read_text().strip() or None
    except (FileNotFoundError, NotADirectoryError):
        return None


def _write_identity(store, value, replace=False):
    """Write `value` as the directory's id, unless one is there already (another process
    sharing the directory won the race): the id in the directory afterwards."""
    path = _identity_path(store)
    path.parent.mkdir(parents=True, exist_ok=True)
    if replace:
        temp = path.with_name(f".{IDENTITY_FILE}.{os.getpid()}")
        temp.write_text(value + "\n")
        os.replace(temp, path)
        return value
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return read_identity(store)
    with os.fdopen(fd, "w") as file:
        file.write(value + "\n")
        file.flush()
        os.fsync(file.fileno())
    return value


def _refusal(store, row, found):
    where = f"the blob directory {store.root}"
    seen = f"holds store id {found}" if found else f"has no {IDENTITY_FILE} file"
    return (
        f"{where} {seen}, but this database's blobs were written to store {row.store_id} "
        f"(recorded from {row.location} at {row.recorded_at:%Y-%m-%d %H:%M} UTC). Every web process and "
        f"worker with the built-in storage must use the same directory, one shared filesystem when they run "
        f"on several machines (README, Scaling out): mount it and point CACHEWEB_DATA_DIR (or the blob "
        f"directory) at it. Starting here would take the blobs this directory lacks for lost. If this "
        f"directory is meant to be the store from now on (the old one is gone for good), run "
        f"`manage.py blobstore --adopt`."
    )


def _some_blobs_present(store):
    newest = Blob.objects.filter(state=BlobState.VERIFIED).order_by("-verified_at")
    rows = list(newest.values_list("organization_id", "digest", "size")[:SAMPLE])
    if not rows:
        return True
    return any(store.sizes(org_id, [digest])[digest] == size for org_id, digest, size in rows)


def check_store(adopt=False):
    """Make sure the configured built-in blob directory is this database's store, giving
    both an identity on first use. Returns the store id (None with S3, whose one bucket
    every process shares by construction). Raises WrongBlobDirectory, with what to do."""
    store = get_store()
    if store.kind != "filesystem":
        return None
    row = StoreIdentity.objects.filter(pk=1).first()
    found = read_identity(store)
    if row is not None:
        if found == row.store_id:
            return found
        if not adopt:
            raise WrongBlobDirectory(_refusal(store, row, found))
        return _write_identity(store, row.store_id, replace=True)
    if not adopt and not _some_blobs_present(store):
        count = Blob.objects.filter(state=BlobState.VERIFIED).count()
        raise WrongBlobDirectory(
            f"the database lists {count} verified blobs and none of its {min(count, SAMPLE)} newest is in the "
            f"blob directory {store.root}: is it the directory they were written to? Every web process and "
            f"worker with the built-in storage must use the same one (README, Scaling out). If this directory "
            f"is meant to be the store from now on, run `manage.py blobstore --adopt`."
        )
    found = found or _write_identity(store, uuid.uuid4().hex)
    row, _ = StoreIdentity.objects.get_or_create(pk=1, defaults={"store_id": found, "location": str(store.root)})
    if row.store_id != found:
        # Another process, on another directory, recorded its own first.
        raise WrongBlobDirectory(_refusal(store, row, found))
    return found


def recorded_store_is_here(store):
    """Whether `store`'s directory is the one the database recorded (True when none is
    recorded yet: nothing to tell them apart by). Asked before blobs are marked lost."""
    recorded = StoreIdentity.objects.filter(pk=1).values_list("store_id", flat=True).first()
    return recorded is None or read_identity(store) == recorded
