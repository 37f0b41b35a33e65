"""What is inside a tar blob (a cache mount snapshot or a layer), read as a stream.

The blob is read once, front to back: raw bytes from storage, then zstd or gzip
decompression (or none), then tar headers. Nothing is extracted or written to disk and
file data is only skipped over. Every read goes through a budget (wall-clock time,
decompressed bytes) and the tar walk counts entries, so that a decompression bomb or a
tar with millions of entries stops at the configured bound instead of tying up a worker;
the summary then says it is partial and why. Memory stays flat: members are not kept,
oversized tar extension headers are refused before they are buffered, and the zstd
window is capped.
"""

import gzip
import heapq
import io
import tarfile
import time
import zlib
from dataclasses import dataclass, field

import zstandard
from django.conf import settings

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
GZIP_MAGIC = b"\x1f\x8b"

# A zstd frame may ask for a window of up to 2 GiB, which the decoder would allocate.
# 128 MiB is what zstd itself accepts by default and far more than engines use.
ZSTD_MAX_WINDOW = 1 << 27
# pax and GNU long-name headers are read whole into memory by tarfile; real ones are a
# few hundred bytes.
MAX_EXTENSION_HEADER = 1 << 20
RAW_BUFFER = 1 << 20
TAR_BUFSIZE = 1 << 20
# How many top-level directories are tallied one by one; past this they are summed
# together, so a tar with a million top-level names cannot grow the tally without end.
MAX_TOP_LEVEL_TRACKED = 10_000
TOP_LEVEL_SHOWN = 20
LARGEST_FILES_SHOWN = 20
MAX_PATH_STORED = 1024

COMPLETE = "complete"
TRUNCATED = "truncated"
INVALID = "invalid"


@dataclass(frozen=True)
class IndexLimits:
    max_seconds: float
    max_entries: int
    max_bytes: int

    @classmethod
    def from_settings(cls):
        return cls(
            max_seconds=settings.CONTENTS_INDEX_MAX_SECONDS,
            max_entries=settings.CONTENTS_INDEX_MAX_ENTRIES,
            max_bytes=settings.CONTENTS_INDEX_MAX_BYTES,
        )


class LimitReached(Exception):
    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


class InvalidArchive(Exception):
    pass


class _Budget:
    """Deadline and decompressed-byte allowance shared by the readers of one run."""

    def __init__(self, limits):
        self.limits = limits
        self.started = time.monotonic()
        self.deadline = self.started + limits.max_seconds
        self.bytes_read = 0

    def check_time(self):
        if time.monotonic() > self.deadline:
            raise LimitReached("time")

    def elapsed(self):
        return time.monotonic() - self.started


class _CountingRaw(io.RawIOBase):
    """The stored bytes, counted, with the deadline checked on every read (a slow
    object store must not hold the worker past its bound either)."""

    def __init__(self, source, budget):
        self.source = source
        self.budget = budget
        self.count = 0

    def readable(self):
        return True

    def readinto(self, buffer):
        self.budget.check_time()
        data = self.source.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self.count += n
        return n


class _DecompressedBudget(io.RawIOBase):
    """The decompressed tar stream; stops the run once the byte allowance is spent."""

    def __init__(self, stream, budget):
        self.stream = stream
        self.budget = budget

    def readable(self):
        return True

    def read(self, size=-1):
        self.budget.check_time()
        remaining = self.budget.limits.max_bytes - self.budget.bytes_read
        if remaining <= 0:
            raise LimitReached("bytes")
        if size is None or size < 0 or size > remaining:
            # Never ask the decompressor for more than the allowance: the read size is
            # what it allocates.
            size = min(remaining, TAR_BUFSIZE)
        try:
            data = self.stream.read(size)
        except zstandard.ZstdError as e:
            raise InvalidArchive(f"invalid zstd data: {e}") from None
        except (OSError, EOFError, zlib.error) as e:
            raise InvalidArchive(f"invalid compressed data: {e}") from None
        self.budget.bytes_read += len(data)
        return data

    def readinto(self, buffer):
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class _BoundedTarInfo(tarfile.TarInfo):
    """tarfile's documented extension point (custom _proc_* methods), used to refuse
    extension headers too large to be real before tarfile reads them into memory, and
    to notice the end-of-archive marker, which tarfile does not report."""

    @classmethod
    def fromtarfile(cls, tar):
        try:
            return super().fromtarfile(tar)
        except tarfile.EOFHeaderError:
            tar.cacheweb_end_marker = True
            raise

    def _proc_gnulong(self, tar):
        self._check_extension_size()
        return super()._proc_gnulong(tar)

    def _proc_pax(self, tar):
        self._check_extension_size()
        return super()._proc_pax(tar)

    def _check_extension_size(self):
        if self.size > MAX_EXTENSION_HEADER:
            raise InvalidArchive(f"tar extension header of {self.size} bytes")


@dataclass
class ContentsSummary:
    status: str = COMPLETE
    reason: str = ""
    compression: str = ""
    entries: int = 0
    files: int = 0
    directories: int = 0
    symlinks: int = 0
    hardlinks: int = 0
    other: int = 0
    total_bytes: int = 0
    stream_bytes: int = 0
    stored_bytes_read: int = 0
    seconds: float = 0.0
    top_level: list = field(default_factory=list)
    root_files: dict = field(default_factory=lambda: {"files": 0, "bytes": 0})
    largest_files: list = field(default_factory=list)
    # Every entry, [path, size, kind] in archive order, when a listing was asked for: up
    # to `listing_limit` of them (listing_truncated says whether there were more).
    listing: list = field(default_factory=list)
    listing_truncated: bool = False

    @property
    def complete(self):
        return self.status == COMPLETE

    def as_dict(self):
        return {
            "status": self.status,
            "reason": self.reason,
            "compression": self.compression,
            "entries": self.entries,
            "files": self.files,
            "directories": self.directories,
            "symlinks": self.symlinks,
            "hardlinks": self.hardlinks,
            "other": self.other,
            "total_bytes": self.total_bytes,
            "stream_bytes": self.stream_bytes,
            "stored_bytes_read": self.stored_bytes_read,
            "seconds": round(self.seconds, 3),
            "top_level": self.top_level,
            "root_files": self.root_files,
            "largest_files": self.largest_files,
        }


def _clean_path(name):
    # Names are bytes from an untrusted archive: make them storable text (valid UTF-8,
    # no NUL, which PostgreSQL's JSON refuses) and relative.
    text = name.encode("utf-8", "surrogateescape").decode("utf-8", "replace").replace("\x00", "")
    while text.startswith("./"):
        text = text[2:]
    return text.lstrip("/")


# Kinds in a listing: file, directory, symlink, hardlink, other.
FILE, DIRECTORY, SYMLINK, HARDLINK, OTHER = "f", "d", "l", "h", "o"


def _kind(member):
    if member.isreg():
        return FILE
    if member.isdir():
        return DIRECTORY
    if member.issym():
        return SYMLINK
    if member.islnk():
        return HARDLINK
    return OTHER


class _Tally:
    def __init__(self, summary, listing_limit=0):
        self.summary = summary
        self.listing_limit = listing_limit
        self.top = {}
        self.top_overflow = {"name": "(other directories)", "files": 0, "bytes": 0, "directories": 0}
        self.largest = []

    def _top_entry(self, name):
        entry = self.top.get(name)
        if entry is None:
            if len(self.top) >= MAX_TOP_LEVEL_TRACKED:
                self.top_overflow["directories"] += 1
                return self.top_overflow
            entry = self.top[name] = {"name": name, "files": 0, "bytes": 0}
        return entry

    def add(self, member):
        s = self.summary
        s.entries += 1
        path = _clean_path(member.name)
        if path in ("", "."):
            return
        if self.listing_limit:
            if len(s.listing) < self.listing_limit:
                s.listing.append([path[:MAX_PATH_STORED], max(member.size, 0) if member.isreg() else 0, _kind(member)])
            else:
                s.listing_truncated = True
        head, sep, _ = path.partition("/")
        if member.isdir():
            s.directories += 1
            self._top_entry(head)
            return
        if member.issym():
            s.symlinks += 1
        elif member.islnk():
            s.hardlinks += 1
        elif not member.isreg():
            s.other += 1
        if not member.isreg():
            if sep:
                self._top_entry(head)
            return
        size = max(member.size, 0)
        s.files += 1
        s.total_bytes += size
        bucket = self._top_entry(head) if sep else s.root_files
        bucket["files"] += 1
        bucket["bytes"] += size
        item = (size, path[:MAX_PATH_STORED])
        if len(self.largest) < LARGEST_FILES_SHOWN:
            heapq.heappush(self.largest, item)
        elif item > self.largest[0]:
            heapq.heapreplace(self.largest, item)

    def finish(self):
        ranked = sorted(self.top.values(), key=lambda d: (-d["bytes"], d["name"]))
        shown = ranked[:TOP_LEVEL_SHOWN]
        rest = ranked[TOP_LEVEL_SHOWN:]
        if rest or self.top_overflow["directories"]:
            overflow = dict(self.top_overflow)
            overflow["directories"] += len(rest)
            overflow["files"] += sum(d["files"] for d in rest)
            overflow["bytes"] += sum(d["bytes"] for d in rest)
            shown.append(overflow)
        self.summary.top_level = shown
        self.summary.largest_files = [
            {"path": path, "size": size} for size, path in sorted(self.largest, key=lambda i: (-i[0], i[1]))
        ]


def _decompressed(buffered, budget):
    magic = buffered.peek(4)[:4]
    if magic.startswith(ZSTD_MAGIC):
        dctx = zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW)
        stream = dctx.stream_reader(buffered, read_size=RAW_BUFFER, read_across_frames=True)
        return "zstd", _DecompressedBudget(stream, budget)
    if magic.startswith(GZIP_MAGIC):
        return "gzip", _DecompressedBudget(gzip.GzipFile(fileobj=buffered, mode="rb"), budget)
    return "none", _DecompressedBudget(buffered, budget)


def index_stream(source, limits=None, listing_limit=0):
    """Summarize the tar archive (zstd, gzip or uncompressed) readable from `source`;
    with `listing_limit`, also list its first that many entries.

    Never raises for bad or hostile input: the summary's status says complete,
    truncated (a bound was reached; `reason` says which and the counts are partial)
    or invalid (`reason` says why).
    """
    limits = limits or IndexLimits.from_settings()
    budget = _Budget(limits)
    raw = _CountingRaw(source, budget)
    summary = ContentsSummary()
    tally = _Tally(summary, listing_limit)
    try:
        buffered = io.BufferedReader(raw, buffer_size=RAW_BUFFER)
        summary.compression, stream = _decompressed(buffered, budget)
        _walk(stream, tally, limits, budget)
    except LimitReached as e:
        summary.status, summary.reason = TRUNCATED, e.reason
    except InvalidArchive as e:
        summary.status, summary.reason = INVALID, str(e)
    except (tarfile.TarError, EOFError) as e:
        summary.status, summary.reason = INVALID, f"invalid tar: {e}"
    tally.finish()
    summary.stream_bytes = budget.bytes_read
    summary.stored_bytes_read = raw.count
    summary.seconds = budget.elapsed()
    return summary


def _walk(stream, tally, limits, budget):
    with tarfile.open(fileobj=stream, mode="r|", bufsize=TAR_BUFSIZE, tarinfo=_BoundedTarInfo) as tar:
        while True:
            budget.check_time()
            member = tar.next()
            # Stream mode keeps every member it has seen; drop them to keep memory flat.
            tar.members.clear()
            if member is None:
                break
            if tally.summary.entries >= limits.max_entries:
                raise LimitReached("entries")
            tally.add(member)
        # Set by _BoundedTarInfo, possibly while tarfile.open read the first header.
        if not getattr(tar, "cacheweb_end_marker", False):
            # tarfile ends quietly when the data stops at a header boundary; an archive
            # cut short there (a truncated upload) is not a valid tar.
            raise InvalidArchive("tar ends without an end-of-archive marker (truncated)")


class BlobMissing(LookupError):
    pass


def open_blob_stream(organization, digest):
    """The stored bytes of a blob as a file-like object read front to back, without
    copying it anywhere first. Raises BlobMissing."""
    from blobs.storage import get_store

    store = get_store()
    if store.kind == "s3":
        client = store.client
        try:
            return client.get_object(Bucket=store.bucket, Key=store.key(organization.pk, digest))["Body"]
        except client.exceptions.NoSuchKey:
            raise BlobMissing(digest) from None
    try:
        return store.open(organization.pk, digest)
    except FileNotFoundError:
        raise BlobMissing(digest) from None


def index_blob(organization, digest, limits=None, listing_limit=0):
    """index_stream over a stored blob of `organization` (a snapshot or a layer)."""
    stream = open_blob_stream(organization, digest)
    try:
        return index_stream(stream, limits, listing_limit)
    finally:
        stream.close()
