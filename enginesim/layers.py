"""Real layer blobs: tar archives of generated files, compressed with zstandard.

Content is a pure function of a seed string, and the tar headers are fixed (mtime, owner,
mode), so every simulated engine that builds the same operation makes byte-identical
layers, as a reproducible build would. That is what lets the import checker tell a correct
hit from a wrong one by digest alone. Each archive also carries `.enginesim/origin` naming
what it was built from, so a downloaded blob can be checked for what it is, not only for
matching its own digest.
"""

import functools
import gzip
import hashlib
import io
import random
import tarfile
from dataclasses import dataclass

import zstandard

ZSTD_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+zstd"
# Layers pulled from a registry keep the registry's compression: the engine asks for zstd
# without forcing it, so image layers reach the cache as docker gzip layers.
DOCKER_GZIP_MEDIA_TYPE = "application/vnd.docker.image.rootfs.diff.tar.gzip"
ORIGIN_FILE = ".enginesim/origin"
# A fixed mtime keeps archives reproducible.
TAR_MTIME = 1_700_000_000
ZSTD_LEVEL = 3


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Layer:
    digest: str
    diff_id: str
    size: int
    blob: bytes
    origin: str
    created_at: str  # RFC 3339, the `buildkit/createdat` annotation
    media_type: str = ZSTD_MEDIA_TYPE

    def descriptor(self):
        """An OCI descriptor as Go's ocispecs.Descriptor marshals it (field order kept)."""
        return {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
            "annotations": {"buildkit/createdat": self.created_at, "containerd.io/uncompressed": self.diff_id},
        }


def build_tar(files: dict) -> bytes:
    """A deterministic tar of {path: bytes}, directories implied, sorted by path."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        seen_dirs = set()
        for path in sorted(files):
            parts = path.split("/")[:-1]
            for depth in range(1, len(parts) + 1):
                d = "/".join(parts[:depth])
                if d not in seen_dirs:
                    seen_dirs.add(d)
                    tar.addfile(_info(d, tarfile.DIRTYPE, 0o755))
            data = files[path]
            tar.addfile(_info(path, tarfile.REGTYPE, 0o644, len(data)), io.BytesIO(data))
    return out.getvalue()


def _info(name, kind, mode, size=0):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.size = size
    info.mtime = TAR_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def compress(data: bytes) -> bytes:
    # One-shot compression with the size written in the frame header: deterministic.
    return zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=True).compress(data)


def decompress(blob: bytes) -> bytes:
    """Either compression, told apart by magic number as containerd does."""
    if blob[:2] == b"\x1f\x8b":
        return gzip.decompress(blob)
    return zstandard.ZstdDecompressor().decompressobj().decompress(blob)


def generated_files(origin: str, size: int) -> dict:
    """About `size` bytes of files, half text-like (compressible), half random, from `origin`."""
    rng = random.Random(hashlib.sha256(origin.encode()).digest())
    files = {ORIGIN_FILE: origin.encode() + b"\n"}
    remaining = max(size, 64)
    index = 0
    while remaining > 0:
        chunk = min(remaining, rng.choice((512, 4096, 16384, 65536, 262144)))
        if index % 2 == 0:
            data = rng.randbytes(chunk)
        else:
            words = [rng.choice(_WORDS) for _ in range(chunk // 6 + 1)]
            data = " ".join(words).encode()[:chunk]
        files[f"{_DIRS[index % len(_DIRS)]}/f{index:04d}-{rng.randrange(16**6):06x}"] = data
        remaining -= chunk
        index += 1
    return files


def make_layer(origin: str, size: int, created_at: str, media_type: str = ZSTD_MEDIA_TYPE) -> Layer:
    blob, digest, diff_id = _blob(origin, size, media_type)
    return Layer(digest=digest, diff_id=diff_id, size=len(blob), blob=blob, origin=origin,
                 created_at=created_at, media_type=media_type)


@functools.lru_cache(maxsize=4096)
def _blob(origin, size, media_type):
    # Many simulated engines build the same layers: compress each one once per process.
    raw = build_tar(generated_files(origin, size))
    blob = gzip.compress(raw, mtime=0) if media_type == DOCKER_GZIP_MEDIA_TYPE else compress(raw)
    return blob, sha256_digest(blob), sha256_digest(raw)


def read_origin(raw_tar: bytes) -> str:
    """The origin written into a layer, or "" if the archive has none or is not a tar."""
    try:
        with tarfile.open(fileobj=io.BytesIO(raw_tar), mode="r:") as tar:
            member = tar.extractfile(ORIGIN_FILE)
            return member.read().decode().strip() if member else ""
    except (tarfile.TarError, KeyError):
        return ""


def read_files(raw_tar: bytes) -> dict:
    with tarfile.open(fileobj=io.BytesIO(raw_tar), mode="r:") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


_DIRS = ("usr/lib", "usr/bin", "app", "root/.cache", "etc", "var/lib/apk", "src/pkg")
_WORDS = (
    "func", "return", "import", "package", "const", "struct", "interface", "go", "defer",
    "error", "nil", "string", "int64", "context", "buildkit", "layer", "digest", "sha256",
)
