"""Where blob bytes live: the local filesystem (built-in) or an S3-compatible store.

Both are chosen by STORAGES["blobs"] (see settings): a FileSystemStorage gives the
built-in store, whose URLs point back at this service; django-storages' S3Storage gives
the S3 store, whose URLs are presigned and never touch this service. Only the location,
bucket and client are taken from the Django storage object: blob transfers need things
the Storage API does not offer (atomic verified writes, presigned PUTs with checksums).

Objects are keyed by organization id and digest, so organizations never share bytes:
    <root or prefix>/<org id>/sha256/<hex>          (S3)
    <root>/<org id>/sha256/<hex[:2]>/<hex>           (filesystem; fan-out keeps dirs small)
"""

import base64
import contextlib
import ctypes
import errno
import hashlib
import os
import time
import queue
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.files.storage import FileSystemStorage, storages

# Large enough that per-call overhead (Python, the WSGI input stream) is noise next to
# hashing and copying; small enough that a dozen concurrent uploads stay a few MB.
CHUNK_SIZE = 1024 * 1024
# Buffers per upload: one being filled and hashed, the others queued for the writer.
BUFFERS = 4
# SigV4 presigned URLs cannot live longer than seven days.
S3_MAX_LIFETIME = 7 * 24 * 3600


class UploadRejected(Exception):
    """The bytes offered are not the blob the URL was issued for. Nothing was kept."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


class StoreUnavailable(Exception):
    """The object store could not be asked (network, credentials, 5xx)."""


def sha256_b64(digest):
    """The base64 of the raw SHA-256 named by `sha256:<hex>`: S3's checksum spelling."""
    return base64.b64encode(bytes.fromhex(digest.split(":", 1)[1])).decode()


@dataclass(frozen=True)
class ObjectInfo:
    size: int
    checksum_sha256: str | None


def _sync_file_range():
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):  # not Linux
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_start_writeback = _sync_file_range()
SYNC_FILE_RANGE_WRITE = 2
# With fsync on, ask the kernel to start writing every this many bytes as they arrive,
# so that the fsync at the end waits for the last few MB instead of the whole blob.
WRITEBACK_EVERY = 32 * 1024 * 1024


class _Writer(threading.Thread):
    """Writes filled buffers to a file descriptor on its own thread, so that writing one
    overlaps receiving and hashing the next (all three release the GIL). An upload owns
    BUFFERS buffers of CHUNK_SIZE: the receiving side takes a free one, fills it and
    queues it; this thread writes it and hands it back. After a write error it keeps
    recycling buffers so the producer never blocks; `error` says what failed."""

    def __init__(self, fd, early_writeback):
        super().__init__(daemon=True, name="blob-writer")
        self.fd = fd
        self.error = None
        self.filled = queue.Queue()
        self.free = queue.Queue()
        for _ in range(BUFFERS):
            self.free.put(bytearray(CHUNK_SIZE))
        self.early_writeback = early_writeback and _start_writeback is not None

    def run(self):
        written = started = 0
        while (item := self.filled.get()) is not None:
            buffer, length = item
            if self.error is None:
                try:
                    view = memoryview(buffer)[:length]
                    while view:
                        n = os.write(self.fd, view)
                        view = view[n:]
                        written += n
                except OSError as exc:
                    self.error = exc
                if self.early_writeback and written - started >= WRITEBACK_EVERY:
                    _start_writeback(self.fd, started, written - started, SYNC_FILE_RANGE_WRITE)
                    started = written
            self.free.put(buffer)

    def take(self):
        """A free buffer (waits while all of them are queued for writing)."""
        return self.free.get()

    def put(self, buffer, length):
        self.filled.put((buffer, length))

    def finish(self):
        if self.is_alive():
            self.filled.put(None)
            self.join()


def _fill(body, buffer):
    """Fill `buffer` from `body` (a reader with readinto); fewer bytes only at its end."""
    view = memoryview(buffer)
    filled = 0
    while filled < len(view):
        n = body.readinto(view[filled:])
        if not n:
            break
        filled += n
    return filled


class FileSystemBlobStore:
    kind = "filesystem"

    def __init__(self, location, fsync=True):
        self.root = Path(location)
        self.fsync = fsync

    def path(self, org_id, digest):
        algorithm, hexdigest = digest.split(":", 1)
        return self.root / str(int(org_id)) / algorithm / hexdigest[:2] / hexdigest

    def info(self, org_id, digest):
        try:
            return ObjectInfo(size=self.path(org_id, digest).stat().st_size, checksum_sha256=None)
        except FileNotFoundError:
            return None

    def sweep_partial(self, older_than):
        """Delete upload temp files last written more than `older_than` seconds ago.

        A PUT cleans up after itself, but not when its worker is killed mid-upload (OOM,
        a restart past the graceful timeout); those files would stay forever. Returns
        how many were removed."""
        cutoff = time.time() - older_than
        removed = 0
        for path in self.root.glob("*/*/*/.*.part"):
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        return removed

    def sizes(self, org_id, digests):
        """{digest: size on disk, or None when absent}. Plain string paths: /import checks
        tens of thousands of blobs and pathlib's overhead dominated."""
        base = f"{self.root}{os.sep}{int(org_id)}{os.sep}"
        found = {}
        for digest in digests:
            algorithm, hexdigest = digest.split(":", 1)
            try:
                found[digest] = os.stat(f"{base}{algorithm}{os.sep}{hexdigest[:2]}{os.sep}{hexdigest}").st_size
            except FileNotFoundError:
                found[digest] = None
        return found

    def hash_file(self, org_id, digest):
        """(size, 'sha256:<hex>') of the blob's bytes on disk, or None when absent or
        unreadable (EIO: the failing disk that verifyblobs is run for; such a blob cannot
        be served either, so it counts as lost). Other errors, such as no permission,
        say nothing about the bytes and are raised."""
        hasher = hashlib.sha256()
        size = 0
        try:
            with self.open(org_id, digest) as file:
                while chunk := file.read(CHUNK_SIZE):
                    hasher.update(chunk)
                    size += len(chunk)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno != errno.EIO:
                raise
            return None
        return size, "sha256:" + hasher.hexdigest()

    def open(self, org_id, digest):
        """The blob opened for binary reading; FileNotFoundError when absent."""
        return open(self.path(org_id, digest), "rb")

    @staticmethod
    def _check_room(folder, length):
        """Refuse (507) an upload that would leave less than CACHEWEB_BLOB_DISK_MIN_FREE on
        the blob disk: the database, the logs and the upload's own temporary file share it,
        and /healthz reports the disk failing below the same line."""
        disk = os.statvfs(folder)
        free = disk.f_bavail * disk.f_frsize
        if free - length < settings.BLOB_DISK_MIN_FREE:
            raise UploadRejected(
                507, f"the blob disk has {free} bytes free; storing {length} more would leave less than "
                f"CACHEWEB_BLOB_DISK_MIN_FREE ({settings.BLOB_DISK_MIN_FREE})",
            )

    def receive(self, org_id, digest, body, length):
        """Store exactly `length` bytes read from `body` (a reader with readinto, see
        blobs/body.py) as blob `digest`, only if they hash to it. The bytes go to a
        temporary file in the final directory (same file system, so the rename is
        atomic) and are renamed into place once verified; readers see the whole blob or
        nothing. Raises UploadRejected, keeping nothing."""
        final = self.path(org_id, digest)
        final.parent.mkdir(parents=True, exist_ok=True)
        self._check_room(final.parent, length)
        fd, temp_name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name[:16]}.", suffix=".part")
        hasher = hashlib.sha256()
        received = 0
        writer = _Writer(fd, early_writeback=self.fsync)
        try:
            writer.start()
            try:
                while received < length and writer.error is None:
                    buffer = writer.take()
                    n = _fill(body, memoryview(buffer)[: min(CHUNK_SIZE, length - received)])
                    if not n:
                        writer.free.put(buffer)
                        break
                    hasher.update(memoryview(buffer)[:n])
                    writer.put(buffer, n)
                    received += n
            finally:
                writer.finish()
            if writer.error is not None:
                raise UploadRejected(507, f"could not store the blob: {writer.error.strerror}")
            if received < length:
                raise UploadRejected(400, f"body ended after {received} of {length} bytes")
            if "sha256:" + hasher.hexdigest() != digest:
                raise UploadRejected(400, f"body does not hash to {digest}")
            if self.fsync:
                # Rows say "verified" once we return: the bytes must survive a crash.
                os.fsync(fd)
            os.fchmod(fd, 0o640)
            os.close(fd)
            fd = None
            os.replace(temp_name, final)
        except BaseException:
            if fd is not None:
                os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp_name)
            raise
        if self.fsync:
            dir_fd = os.open(final.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        return received

    def delete(self, org_id, digest):
        with contextlib.suppress(FileNotFoundError):
            self.path(org_id, digest).unlink()


class S3BlobStore:
    kind = "s3"

    def __init__(self, storage):
        self.storage = storage
        self.bucket = storage.bucket_name
        self.prefix = (storage.location or "").strip("/")

    @property
    def client(self):
        # django-storages keeps one boto3 resource per thread; borrow its client.
        return self.storage.connection.meta.client

    def key(self, org_id, digest):
        algorithm, hexdigest = digest.split(":", 1)
        name = f"{int(org_id)}/{algorithm}/{hexdigest}"
        return f"{self.prefix}/{name}" if self.prefix else name

    def presigned_put(self, org_id, digest, size, lifetime):
        """(url, headers) for a PUT that the store itself refuses unless the body hashes
        to `digest` (x-amz-checksum-sha256 is signed) and, when given, is `size` bytes."""
        checksum = sha256_b64(digest)
        params = {"Bucket": self.bucket, "Key": self.key(org_id, digest), "ChecksumSHA256": checksum}
        if size is not None:
            params["ContentLength"] = size
        url = self.client.generate_presigned_url(
            "put_object", Params=params, ExpiresIn=min(lifetime, S3_MAX_LIFETIME), HttpMethod="PUT"
        )
        return url, {"x-amz-checksum-sha256": checksum}

    def presigned_get(self, org_id, digest, lifetime):
        return self.client.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.bucket, "Key": self.key(org_id, digest)},
            ExpiresIn=min(lifetime, S3_MAX_LIFETIME),
            HttpMethod="GET",
        )

    def info(self, org_id, digest):
        """Size and stored SHA-256 checksum (base64, None if the store kept none), or
        None when the object does not exist. Raises StoreUnavailable."""
        try:
            head = self.client.head_object(
                Bucket=self.bucket, Key=self.key(org_id, digest), ChecksumMode="ENABLED"
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise StoreUnavailable(str(exc)) from exc
        except BotoCoreError as exc:
            raise StoreUnavailable(str(exc)) from exc
        return ObjectInfo(size=head["ContentLength"], checksum_sha256=head.get("ChecksumSHA256"))

    def hash_object(self, org_id, digest):
        """(size, 'sha256:<hex>') computed by streaming the object: for stores that kept
        no checksum. Never holds the object in memory. Raises StoreUnavailable."""
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self.key(org_id, digest))["Body"]
            hasher = hashlib.sha256()
            size = 0
            try:
                for chunk in body.iter_chunks(CHUNK_SIZE):
                    hasher.update(chunk)
                    size += len(chunk)
            finally:
                body.close()
        except (ClientError, BotoCoreError) as exc:
            raise StoreUnavailable(str(exc)) from exc
        return size, "sha256:" + hasher.hexdigest()

    def delete(self, org_id, digest):
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.key(org_id, digest))
        except (ClientError, BotoCoreError) as exc:
            raise StoreUnavailable(str(exc)) from exc


def get_store():
    """The blob store configured by STORAGES["blobs"]."""
    from django.conf import settings

    storage = storages["blobs"]
    if isinstance(storage, FileSystemStorage):
        return FileSystemBlobStore(storage.location, fsync=getattr(settings, "BLOB_FSYNC", True))
    if hasattr(storage, "bucket_name") and hasattr(storage, "connection"):
        return S3BlobStore(storage)
    raise ImproperlyConfigured(
        f"STORAGES['blobs'] must be a FileSystemStorage or an S3Storage, not {type(storage).__name__}"
    )
